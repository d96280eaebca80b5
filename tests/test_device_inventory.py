"""The `device` platform through the product: the CLI, the API and the console's asset and
plan forms take a preset or a dialogue (checked when saved, with the line named), an `enable`
account's secret reaches the command sealed, secure mode keeps the enable account, and a secret
a device CLI cannot take is refused when it is set."""
from __future__ import annotations

import html

import pytest

from controller import inventory
from controller.dispatch import dispatch_pending
from controller.models import Asset, Plan
from controller.names import BadName
from controller.planning import start_execution
from controller.plans import PlanError, parse_spec, save_plan
from controller.secretgen import RuleError
from shared import dialogues
from shared.device_presets import PRESETS, preset_lines
from tests.inventory_helpers import sent_commands
from tests.processes import ProcessGroup, keyturn_env

only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
DIALOGUE = ["timeout 5", "expect [>#] ?$", "send enable", "expect (?i)password:",
            "send {enable_secret}", "expect #", "change username {username} secret {new_secret}",
            "expect #"]
BAD_REGEX = ["expect [>#", "change {new_secret}"]


@pytest.fixture
def zone(ctl):
    inventory.add_zone(ctl, "dmz", None, True)
    return "dmz"


@only_sqlite
def test_the_cli_adds_a_device_with_a_preset_or_a_dialogue_and_says_what_is_wrong(settings, ctl,
                                                                                tmp_path):
    cli = ProcessGroup(keyturn_env(settings, None), tmp_path)
    for step in (("init",), ("zone", "add", "z")):
        assert cli.run(*step).returncode == 0, step
    base = ("asset", "add", "--platform", "device", "--address", "127.0.0.1", "--zone", "z")
    assert cli.run(*base[:2], "sw-1", *base[2:], "--param", "preset=cisco-ios").returncode == 0
    done = cli.run(*base[:2], "sw-2", *base[2:], "--param", "dialogue=" + "\n".join(DIALOGUE))
    assert done.returncode == 0, done.stderr
    assert {a.name: (a.port, a.params) for a in Asset.select()} == {
        "sw-1": (22, {"preset": "cisco-ios"}), "sw-2": (22, {"dialogue": DIALOGUE})}

    done = cli.run(*base[:2], "sw-3", *base[2:], "--param", "dialogue=" + "\n".join(BAD_REGEX))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "params.dialogue: line 1: not a regular expression" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("params,words", [
    ({"dialogue": BAD_REGEX}, "params.dialogue: line 1: not a regular expression"),
    ({"dialogue": ["send {new_secert}"]}, "line 1: unknown placeholder {new_secert}"),
    ({"dialogue": ["send {new_secret}", "expect x"]}, "has 0 change steps"),
    ({"dialogue": ["expect x", "timeout 9999"]}, "line 2: timeout takes seconds"),
    ({"dialogue": ["send \x1b[A"]}, "holds a control character"),
    ({"dialogue": ["expect " + "x" * 600, "change {new_secret}"]}, "longer than 512"),
    ({"preset": "juniper"}, "params.preset: must be one of 'linux-passwd', 'cisco-ios'"),
    ({"enable_secret": "pw"}, "enable_secret is not a parameter of Network device"),
    ({"proof": ["send {secret}", "expect ok"]}, "params.proof: needs a fail line"),
    ({"proof": ["change {secret}", "fail no"]}, "line 1: a proof changes nothing: use send"),
    ({"proof": ["send {new_secret}", "fail no"]}, "line 1: unknown placeholder {new_secret}"),
])
def test_the_api_refuses_a_bad_dialogue_by_line(as_admin, fleet, params, words):
    answer = as_admin.post_json("/api/v1/assets/new", {
        "name": "sw-1", "address": "127.0.0.1", "platform": "device", "zone": "dmz",
        "params": params})
    assert answer.status_code == 409 and words in answer.json["error"], answer.json
    assert not Asset.select().where(Asset.name == "sw-1").exists()


def test_the_asset_form_offers_the_presets_and_a_dialogue_box(as_admin, fleet):
    page = as_admin.get("/assets").text
    assert 'name="params.device.preset"' in page and "<option>huawei-vrp</option>" in page
    assert 'name="params.device.dialogue"' in page and "change TEXT" in page
    assert 'name="params.device.enable_secret"' not in page    # the enable account's, sealed

    form = {"name": "sw-1", "address": "127.0.0.1", "platform": "device", "zone": "dmz",
            "params.device.preset": "",
            "params.device.dialogue": "\r\n".join(DIALOGUE) + "\r\n\r\n"}
    assert as_admin.post("/assets/new", form).status_code == 302
    device = Asset.get(Asset.name == "sw-1")
    assert device.params == {"dialogue": DIALOGUE}
    shown = html.unescape(as_admin.get(f"/assets/{device.id}").text)
    assert "<pre>" + "\n".join(DIALOGUE) + "</pre>" in shown

    bad = as_admin.post("/assets/new", form | {"name": "sw-2",
                                               "params.device.dialogue": "\n".join(BAD_REGEX)},
                        follow_redirects=True)
    assert bad.status_code == 422 and "line 1: not a regular expression" in html.unescape(bad.text)
    assert "pydantic" not in bad.text and "Value error" not in bad.text


def test_the_plan_form_takes_a_dialogue_and_names_a_bad_line(as_admin, fleet):
    form = {"name": "switches", "usernames": "alice", "nodes": "/prod", "strategy": "random",
            "secret_type": "password", "length": "20", "lowercase": "on", "uppercase": "on",
            "digits": "on", "schedule": "manual", "active": "on",
            "params.dialogue": "\n".join(DIALOGUE), "params.preset": ""}
    assert as_admin.post("/plans/new", form).status_code == 302
    plan = Plan.get(Plan.name == "switches")
    assert plan.params["dialogue"] == DIALOGUE and "preset" not in plan.params
    edit = html.unescape(as_admin.get(f"/plans/{plan.id}/edit").text)
    assert "\n".join(DIALOGUE) in edit

    bad = as_admin.post("/plans/new", form | {"name": "bad", "params.dialogue": "send x"})
    assert bad.status_code == 422 and "has 0 change steps" in html.unescape(bad.text)


def test_plans_never_carry_a_borrowed_secret(ctl, zone):
    for secret_param in ("enable_secret", "become_secret"):
        with pytest.raises(PlanError, match=f"{secret_param} is the secret of another account"):
            parse_spec({"name": "p", "usernames": ["bob"], "assets": ["a"],
                        "params": {secret_param: "pw"}})


def test_the_enable_accounts_secret_is_sealed_into_the_command_and_secure_mode_keeps_it(ctl, zone):
    inventory.add_asset("sw-1", "127.0.0.1", None, "device", "dmz", "/net", None,
                        {"preset": "cisco-ios"})
    inventory.set_account(ctl, "sw-1", "netops", "Netops-pw-1", privileged=True)
    inventory.set_account(ctl, "sw-1", "enable", "Enable $(x) {{y}} pw", False)
    inventory.set_account(ctl, "sw-1", "alice", "old-alice", False)
    inventory.add_asset("sw-2", "127.0.0.1", None, "device", "dmz", "/net", None,
                        {"preset": "linux-passwd"})
    inventory.set_account(ctl, "sw-2", "netops", "Netops-pw-2", privileged=True)
    inventory.set_account(ctl, "sw-2", "alice", "old-alice", False)
    plan = save_plan(parse_spec({"name": "p", "usernames": ["alice", "enable"], "nodes": ["/net"]}),
                     ctl.vault)

    execution = start_execution(ctl, plan)
    assert dispatch_pending(ctl) == execution.total == 2         # enable: protected, skipped
    commands = {c.asset.name: c for c in sent_commands(ctl)}
    assert {c.username for c in commands.values()} == {"alice"}
    cisco, linux = commands["sw-1"].params, commands["sw-2"].params
    assert cisco.enable_secret.get_secret_value() == "Enable $(x) {{y}} pw"
    assert cisco.dialogue_lines() == preset_lines("cisco-ios")
    assert linux.enable_secret is None and linux.preset == "linux-passwd"
    assert "Enable $(x)" not in repr(commands["sw-1"])


@pytest.mark.parametrize("secret", ["tab\there", "escape\x1b[A", "bell\x07"])
def test_a_device_account_refuses_a_secret_its_cli_cannot_take(ctl, zone, secret):
    inventory.add_asset("sw-1", "127.0.0.1", None, "device", "dmz", "/net", None, None)
    with pytest.raises((RuleError, BadName), match="control character") as raised:
        inventory.set_account(ctl, "sw-1", "enable", secret, False)
    assert secret not in str(raised.value)


def test_a_plan_refuses_a_given_secret_its_devices_cannot_take(ctl, zone):
    inventory.add_asset("sw-1", "127.0.0.1", None, "device", "dmz", "/net", None, None)
    spec = parse_spec({"name": "p", "usernames": ["alice"], "assets": ["sw-1"],
                       "strategy": "specific", "secret": "Tab\tInside-1"})
    with pytest.raises(PlanError, match="secret: holds a tab or another control character, "
                                        "which the CLI of sw-1 cannot take"):
        save_plan(spec, ctl.vault)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_is_a_dialogue_that_types_the_new_secret_at_its_change_step(name):
    """The vendor presets are data nobody ran here against a real device: at least each one
    parses, and types the new secret on its one change step."""
    dialogue = dialogues.parse(preset_lines(name))
    assert "{new_secret}" in dialogue.steps[dialogue.change_index].send
    assert dialogue.fail and all(step.expect for step in dialogue.steps[dialogue.change_index:])
