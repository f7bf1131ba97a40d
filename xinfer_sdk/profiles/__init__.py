"""Hardware profiles: the YAML files in ``profiles/`` as validated objects, and detection of this machine."""

from .detect import Detection, HostInfo, detect, read_host
from .loader import ENV_PATH, ProfileRegistry, load_profile
from .schema import BUILDABLE_PRECISIONS, PRECISIONS, Profile, Thresholds

__all__ = ["Profile", "Thresholds", "ProfileRegistry", "load_profile", "detect", "Detection", "HostInfo",
           "read_host", "PRECISIONS", "BUILDABLE_PRECISIONS", "ENV_PATH"]
