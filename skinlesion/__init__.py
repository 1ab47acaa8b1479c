"""skinlesion: a dermoscopy skin-lesion classifier run as a clinical service, and its monitoring."""

__version__ = "0.1.0"
