"""Every model, imported in one place so migrations and the shell see the whole schema."""
from .auth.models import ApiToken, User
from .bounces.models import BounceReport, Suppression
from .events.models import Event
from .family.models import AddressPreference
from .notify.models import Notification, NotificationBatch, NotificationJob
from .roster.models import (District, Guardian, RosterImport, School, SchoolClass, Student, Teacher, class_students,
                            class_teachers, student_guardians)

__all__ = [
    "AddressPreference", "ApiToken", "User", "BounceReport", "Suppression", "Event", "Notification", "NotificationBatch", "NotificationJob",
    "District", "Guardian", "RosterImport", "School", "SchoolClass", "Student", "Teacher", "class_students", "class_teachers",
    "student_guardians",
]
