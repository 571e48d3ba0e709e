"""The DICOM receiver: C-STORE and C-ECHO into the spool and the index."""
