"""mercury: a DICOM orchestrator for putting AI models into clinical imaging workflows."""

__version__ = "0.1.0"
