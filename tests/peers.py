"""Real peers started by tests: Orthanc (DIMSE + DICOMweb)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import free_port, wait_for


class Orthanc:
    """An Orthanc server on loopback ports, with its REST API for checking what arrived."""

    def __init__(
        self,
        folder: Path,
        modalities: dict[str, list[Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.folder = folder
        self.extra = extra or {}
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.aet = "ORTHANC"
        self.modalities = modalities or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        exe = shutil.which("Orthanc")
        assert exe, "Orthanc is not installed; run scripts/test.sh"
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "TESTPACS",
            "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": self.modalities,
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        config.update(self.extra)
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config))
        self.log = (self.folder / "orthanc.log").open("wb")
        self.proc = subprocess.Popen([exe, str(path)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 60, "Orthanc to answer GET /system")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()}")
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: bytes | dict[str, Any]) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()
