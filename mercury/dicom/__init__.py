"""DICOM building blocks shared by every stage: UIDs, header extraction, SOP classes.

Pure functions over bytes and strings; nothing here touches the network, the spool or the
index (the network layer lives in :mod:`mercury.dicom.net`).
"""
