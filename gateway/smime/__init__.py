"""S/MIME for recipients: certificate store, harvesting from signed mail, CMS output."""

from gateway.smime.directory import SmimeDirectory
from gateway.smime.handler import SmimeHandler

__all__ = ["SmimeDirectory", "SmimeHandler"]
