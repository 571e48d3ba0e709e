"""Loading configuration files: valid files, and every kind of broken one."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mercury.config import ConfigError, load_config
from mercury.config.targets import (
    DicomTarget,
    DicomTlsTarget,
    DummyTarget,
    FolderTarget,
    S3Target,
    SftpTarget,
)
from tests.config.support import FULL


def write(tmp_path: Path, text: str, name: str = "mercury.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[tuple[str, str, int | None, int | None]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    return [(i.location, i.message, i.line, i.column) for i in caught.value.issues]


def test_full_fixture_loads_every_section() -> None:
    config = load_config(FULL)
    here = FULL.parent
    assert config.appliance_name == "test-router"
    assert config.receiver.port == 11113
    assert config.receiver.allowed_callers[1].address == "192.168.1.20"
    assert config.storage.spool == here / "data" / "spool"
    assert config.storage.database == f"sqlite:///{here / 'data' / 'mercury.db'}"
    assert config.storage.durability == "normal"
    assert config.timings.study_complete_trigger == 600.5
    assert config.timings.offpeak_end == "07:00"
    assert config.processing.persistence_folder == here / "persistence"
    assert config.notifications.webhook_ca_bundle == here / "certs" / "ca.pem"
    assert [type(t) for t in config.targets.values()][:2] == [DicomTarget, DicomTlsTarget]
    assert {t.target_type for t in config.targets.values()} == {
        "dicom",
        "dicomtls",
        "dicomweb",
        "sftp",
        "rsync",
        "xnat",
        "s3",
        "folder",
        "dummy",
    }
    tls = config.targets["pacs_tls"]
    assert isinstance(tls, DicomTlsTarget)
    assert tls.tls_key == here / "tls" / "key.pem"
    assert tls.ca_cert == Path("/etc/ssl/ca.pem")
    share = config.targets["share"]
    assert isinstance(share, SftpTarget)
    assert share.folder == "/upload"  # a remote folder: never resolved locally
    assert share.password is not None
    assert share.password.get_secret_value() == "sftp-password-456"
    export = config.targets["export"]
    assert isinstance(export, FolderTarget)
    assert export.folder == here / "export"
    assert isinstance(config.targets["bucket"], S3Target)
    assert isinstance(config.targets["nowhere"], DummyTarget)


def test_full_fixture_modules_and_rules() -> None:
    config = load_config(FULL)
    segment = config.modules["segment"]
    assert segment.runner == "docker"
    assert segment.additional_volumes["/srv/models"].mode == "ro"
    assert segment.timeout == 1800
    convert = config.modules["convert"]
    assert convert.runner == "local"
    assert convert.command == ["/opt/tools/convert", "--fast"]
    assert convert.timeout is None
    assert list(config.rules) == ["ct_head", "mr_study", "catch_all"]  # file order
    ct = config.rules["ct_head"]
    assert ct.target == ["pacs"]
    assert ct.processing_module == ["segment", "convert"]
    assert ct.settings_for_step(0) == {"threshold": 0.7}
    assert ct.settings_for_step(5) == {}
    assert ct.stop_after is True
    assert config.rules["mr_study"].notification_payload_body == "Study {{ acc }}\ndone\n"


def test_empty_mapping_means_defaults_next_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "{}\n"))
    assert config.receiver.port == 11112
    assert config.storage.spool == tmp_path / "spool"
    assert config.storage.database == f"sqlite:///{tmp_path / 'mercury.db'}"


def test_relative_config_path_resolves_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", "storage: {spool: ../spool}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc/mercury.yaml"))
    assert config.storage.spool == tmp_path / "etc" / ".." / "spool"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite:////var/lib/m.db", "sqlite:////var/lib/m.db"),
        ("sqlite+pysqlite:///m.db?timeout=5", "sqlite+pysqlite:///{dir}/m.db?timeout=5"),
        ("postgresql://u:p@db/mercury", "postgresql://u:p@db/mercury"),
    ],
)
def test_database_urls(tmp_path: Path, url: str, expected: str) -> None:
    config = load_config(write(tmp_path, f"storage: {{database: '{url}'}}\n"))
    assert config.storage.database == expected.format(dir=tmp_path)


def test_yaml_12_scalars(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        timings: {offpeak_start: 22:00, offpeak_end: 06:30}
        receiver: {port: 0x68, max_pdu: 010}
        targets:
          pacs: {target_type: dicom, ip: on, port: 104, aet_target: NO, comment: yes}
        """,
    )
    config = load_config(path)
    assert config.timings.offpeak_start == "22:00"
    assert config.timings.offpeak_end == "06:30"
    assert config.receiver.port == 104
    assert config.receiver.max_pdu == 10  # decimal, not YAML 1.1 octal
    pacs = config.targets["pacs"]
    assert isinstance(pacs, DicomTarget)
    assert (pacs.ip, pacs.aet_target, pacs.comment) == ("on", "NO", "yes")


def test_json_configuration_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, '{"receiver": {"port": 4242}}', name="mercury.json")
    assert load_config(path).receiver.port == 4242


def test_every_error_is_reported_with_location_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        receiver:
          port: 70000
          prot: 5
        timings:
          retry_max: five
        targets:
          pacs:
            target_type: dicom
            ip: 10.0.0.1
            port: "104"
            aet_target: PACS
          bad name:
            target_type: dummy
          notype:
            ip: x
          weird:
            target_type: ftp
        modules:
          seg:
            docker_tag: org/seg:1
            docker_arguments: {privileged: true, mem_limit: 1g}
        rules:
          ct_rule:
            rule: "tags.Modality == 'CT'"
            target: pacs2
            processing_module: [seg, segx]
            action: both
        """,
    )
    types = "dicom, dicomtls, dicomweb, sftp, rsync, xnat, s3, folder, dummy"
    assert problems(path) == [
        ("receiver.port", "must be at most 65535 (got 70000)", 2, 9),
        ("receiver.prot", "unknown key; did you mean 'port'?", 3, 3),
        ("timings.retry_max", "must be a whole number (got 'five')", 5, 14),
        (
            "targets.bad name",
            "'bad name' is not a valid name: use only letters, digits, '_' and '-'",
            12,
            3,
        ),
        ("targets.notype.target_type", f"target_type is missing; set it to one of: {types}", 15, 5),
        (
            "targets.weird.target_type",
            f"unknown target type 'ftp'; expected one of: {types}",
            17,
            18,
        ),
        (
            "modules.seg.docker_arguments.privileged",
            "not an allowed docker argument; only resource and runtime arguments may be set "
            "(see the configuration reference)",
            21,
            36,
        ),
        ("rules.ct_rule.target", "unknown target 'pacs2'; did you mean 'pacs'?", 25, 13),
        ("rules.ct_rule.processing_module", "unknown module 'segx'; did you mean 'seg'?", 26, 24),
    ]


def test_error_message_names_file_key_and_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "targets: {}\nrules:\n  ct_rule: {target: pacs2}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: rules.ct_rule.target: unknown target 'pacs2'; no targets are defined "
        "(line 3, column 21)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "receiver:\n  port: 104\n bad: [\n",
            ("", "not valid YAML: expected <block end>, but found '<block mapping start>'", 3, 2),
        ),
        ("a: [1, 2\n", ("", "not valid YAML: expected ',' or ']', but got '<stream end>'", 2, 1)),
        (
            "receiver: {port: 1}\nreceiver: {port: 2}\n",
            (
                "",
                "not valid YAML: found the key 'receiver' twice; each key may appear only once",
                2,
                1,
            ),
        ),
        ("", ("", "the file is empty; write at least `{}` for all defaults", None, None)),
        ("- a\n- b\n", ("", "the top level must be a mapping of settings, not a list", None, None)),
        (
            "42\n",
            (
                "",
                "the top level must be a mapping of settings, not a single value (42)",
                None,
                None,
            ),
        ),
    ],
)
def test_unreadable_yaml(tmp_path: Path, text: str, expected: tuple[object, ...]) -> None:
    assert problems(write(tmp_path, text)) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{\n  "receiver": {"port": 104}\n  "storage": {}\n}',
            ("", "not valid JSON: Expecting ',' delimiter", 3, 3),
        ),
        (
            '{"receiver": {"port": 1},\n "receiver": {"port": 2}}',
            ("", "not valid JSON: the key 'receiver' appears twice in one object", 2, 2),
        ),
    ],
)
def test_unreadable_json(tmp_path: Path, text: str, expected: tuple[object, ...]) -> None:
    assert problems(write(tmp_path, text, name="mercury.json")) == [expected]


def test_file_problems(tmp_path: Path) -> None:
    assert problems(tmp_path / "missing.yaml") == [("", "file not found", None, None)]
    assert problems(tmp_path) == [("", "is a folder, not a file", None, None)]
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(b"appliance_name: M\xfcnchen\n")
    assert problems(binary) == [
        ("", "not UTF-8 text (invalid byte at offset 17); save it as UTF-8", None, None)
    ]


def test_type_errors_in_plain_words(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        receiver: {accept_compressed: maybe, ae_titles: MERCURY, allowed_callers: [{ae_title: [1]}]}
        storage: {durability: sometimes}
        timings: {offpeak_start: "25:00", series_complete_trigger: 0}
        notifications: []
        """,
    )
    assert [(location, message) for location, message, _, _ in problems(path)] == [
        ("receiver.accept_compressed", "must be true or false (got 'maybe')"),
        ("receiver.ae_titles", "must be a list (got 'MERCURY')"),
        (
            "receiver.allowed_callers[0].ae_title",
            "must be text (quote it if it looks like a number or true/false) (got a list)",
        ),
        ("storage.durability", "must be one of: full, normal (got 'sometimes')"),
        ("timings.offpeak_start", "must be a time of day as HH:MM, 00:00 to 23:59 (got '25:00')"),
        ("timings.series_complete_trigger", "must be greater than 0 (got 0)"),
        ("notifications", "must be a mapping of keys to values (got a list)"),
    ]


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        targets:
          share: {target_type: sftp, folder: /x, user: u, host: h, password: [hunter2-secret]}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "hunter2" not in str(caught.value)
    assert caught.value.issues[0].location == "targets.share.password"


def test_rules_must_be_able_to_do_their_action(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        modules: {m: {docker_tag: x/y}}
        targets: {t: {target_type: dummy}}
        rules:
          route_nowhere: {action: route}
          process_nothing: {action: process}
          both_nothing: {action: both}
          both_dynamic: {action: both, dynamic_routing: true, processing_module: m}
          disabled_is_fine: {action: route, disabled: true}
          study_series: {target: t, action_trigger: study, study_trigger_condition: received_series}
          bad_settings: {target: t, processing_settings: [1, 2]}
          alternate:
            {target: t, conditional_alternate_target: tt, dynamic_routing_allowed_targets: u}
        """,
    )
    assert [(location, message) for location, message, _, _ in problems(path)] == [
        ("rules.route_nowhere.target", "action 'route' needs at least one target"),
        ("rules.process_nothing.processing_module", "action 'process' needs a processing module"),
        ("rules.both_nothing.target", "action 'both' needs at least one target"),
        ("rules.both_nothing.processing_module", "action 'both' needs a processing module"),
        (
            "rules.study_series.study_trigger_series",
            "study_trigger_condition 'received_series' needs the required series here",
        ),
        (
            "rules.bad_settings.processing_settings",
            "must be a mapping of settings, or a list of mappings (one per module in the chain)",
        ),
        (
            "rules.alternate.conditional_alternate_target",
            "unknown target 'tt'; did you mean 't'?",
        ),
        (
            "rules.alternate.dynamic_routing_allowed_targets",
            "unknown target 'u'; defined targets: t",
        ),
    ]


def test_module_and_target_checks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        modules:
          no_image: {}
          no_command: {runner: local}
          escape: {docker_tag: a/b, persistence_folder_name: ../etc}
          mount: {docker_tag: a/b, additional_volumes: {/data: {bind: relative}}}
        targets:
          web: {target_type: dicomweb, url: ftp://example.org}
          pacs: {target_type: dicom, ip: "", port: 104, aet_target: SEVENTEEN_CHARS_X}
        """,
    )
    assert [(location, message) for location, message, _, _ in problems(path)] == [
        (
            "modules.no_image.docker_tag",
            "the docker runner needs an image in docker_tag",
        ),
        ("modules.no_command.command", "the local runner needs a command to run"),
        (
            "modules.escape.persistence_folder_name",
            "'../etc' must be a single folder name of letters, digits, '.', '_' and '-'",
        ),
        (
            "modules.mount.additional_volumes./data.bind",
            "'relative' must be an absolute path inside the container",
        ),
        ("targets.web.url", "'ftp://example.org' must start with http://, https:// or file://"),
        ("targets.pacs.ip", "must not be empty (got '')"),
        (
            "targets.pacs.aet_target",
            "'SEVENTEEN_CHARS_X' is not a valid AE title (1-16 characters, no backslash)",
        ),
    ]
