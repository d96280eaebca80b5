"""The console in Simplified Chinese: every page reads Chinese apart from data and technical
names; the user's own setting beats the browser's Accept-Language; English stays the
default; and the JSON API answers the same English whatever the language asked for."""
from __future__ import annotations

import html
import json
import re

import pytest

from controller.models import (Account, Asset, AuditEvent, Execution, Node, Plan, Record, User,
                               WorkerSeen, Zone)
from controller.web.inventory import param_fields
from shared.platforms import PLATFORMS
from tests.visible_text import console_pages, english_words, visible_text, words_of
from tests.web_support import Console, next_code, route_samples

CHINESE = {"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9,en;q=0.5"}
ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.9"}
HAN = re.compile(r"[\u4e00-\u9fff]")

# Words a Chinese page keeps in Latin letters on purpose. Each line says why; data (names,
# hosts, codes, log and audit texts) is allowed separately, from the database (`data_words`).
TECHNICAL = {
    # acronyms and product names Chinese operators read as they are
    "API", "CSV", "SSH", "URL", "HTTP", "UTC", "UID", "JSON", "OpenAPI", "UNIX", "AIX",
    "Linux", "Ed25519", "base64", "PEM", "OpenSSH", "keyturn", "ACL", "DN", "POSIX", "ASCII",
    # the language chooser names each language in itself
    "English",
    # names of commands, files and settings typed as they are
    "sudo", "su", "root", "auto", "cron", "crontab", "authorized_keys", "sudoers", "Shell",
    "ksh", "bin", "bash", "home", "whoami", "ed25519", "rsa",
    # the device dialogue's keywords and placeholders (platform registry hints)
    "send", "change", "expect", "fail", "timeout", "user_dn", "user_filter", "sAMAccountName",
    "userPrincipalName",
    # a maintenance window's days, in the hint's example
    "Mon", "Fri",
}
# Placeholders that show the syntax a field takes: machine text, left out whole.
EXAMPLES = frozenset({"-----BEGIN OPENSSH PRIVATE KEY-----", "ssh-ed25519 AAAA…", "/prod/web",
                      "rotate:node:/prod\nstatus", "io.keyturn.record.*", "ada, cli:root",
                      "asset/web-1"})


@pytest.fixture
def chinese(app, admin) -> Console:
    """The admin, with a browser that asks for Chinese."""
    console = Console(app)
    console.client.environ_base.update(CHINESE)
    console.person = admin
    console.sign_in(admin)
    return console


def data_words() -> set[str]:
    """The words of the names the database holds and the registry's: shown as they are.
    Free text (worker errors, log lines, audit details) is not here: the pages mark it
    `translate="no"`, and the reader leaves it out."""
    texts = []
    for model, fields in ((Asset, ("name", "address")), (Account, ("username",)),
                          (Plan, ("name", "usernames")), (Node, ("path",)), (Zone, ("name",)),
                          (User, ("username", "email")), (Record, ("error_code", "worker_id")),
                          (Execution, ("plan_name", "started_by")),
                          (WorkerSeen, ("worker_id", "host", "version")),
                          (AuditEvent, ("actor", "action", "target"))):
        for row in model.select():
            texts += [getattr(row, name, None) for name in fields]
    for platform in PLATFORMS.values():
        texts += [platform.name, platform.title]
        for f in param_fields(platform):
            texts += [f["name"], f["name"].replace("_", " "), f["default"], *f["choices"]]
    return words_of(*texts)


def test_every_page_reads_chinese(app, chinese, auditor, ran):
    allowed = TECHNICAL | data_words()
    checked = []
    for path in console_pages(app, ran):
        answer = chinese.get(path)
        assert answer.status_code == 200, path
        if not answer.mimetype == "text/html":
            continue
        html = answer.text
        assert '<html lang="zh-CN">' in html, path
        left = english_words(html, allowed, EXAMPLES)
        assert not left, f"{path} shows English: {sorted(left)} in " + " | ".join(
            line for line in visible_text(html, EXAMPLES).splitlines() if set(words_of(line)) & left)
        assert HAN.search(visible_text(html)), path
        checked.append(path)
    assert len(checked) >= 20, checked


def test_signed_out_and_special_pages_read_chinese(app, ctl, chinese, ran):
    allowed = TECHNICAL | data_words()
    stranger = Console(app)
    stranger.client.environ_base.update(CHINESE)
    login = stranger.get("/login").text
    assert "登录" in login and not english_words(login, allowed, EXAMPLES)
    refused = stranger.post("/login", {"username": "ada", "password": "wrong"}).text
    assert "用户名或密码错误" in refused and not english_words(refused, allowed, EXAMPLES)
    record = Record.select().where(Record.status == "success").first()
    chinese.client.get("/overview")
    with chinese.client.session_transaction() as session:
        session["mfa_at"] = 0                         # the step-up window has closed
    asked = chinese.post(f"/records/{record.id}/reveal")
    assert "确认是您本人" in asked.text and not english_words(asked.text, allowed, EXAMPLES)
    missing = chinese.get("/plans/999999")
    assert missing.status_code == 404 and "未找到" in missing.text
    node = Node.get(Node.path == "/prod")
    confirm = chinese.post(f"/nodes/{node.id}/delete")
    assert confirm.status_code == 409 and not english_words(confirm.text, allowed, EXAMPLES)


def test_flash_messages_and_counts_are_chinese(chinese, ran):
    saved = chinese.post("/me/profile", {"email": "", "language": ""}, follow_redirects=True)
    assert "个人信息已保存" in saved.text
    executions = chinese.get("/executions").text
    assert "共 1 条执行记录" in executions and "1 executions" not in executions
    refused = chinese.post("/me/password", {"current": "not it", "new": "n" * 12},
                           headers={"Referer": "http://localhost/me"}, follow_redirects=True)
    assert "当前密码错误" in refused.text                      # an error of ours, in Chinese
    shown = chinese.get(f"/executions/{ran.id}").text     # the live badge's words, for app.js
    labels = json.loads(html.unescape(re.search(r'data-labels="([^"]*)"', shown).group(1)))
    assert labels["running"] == "执行中" and labels["failed"] == "失败"


def test_english_stays_the_default_with_singular_and_plural(app, admin, ran):
    plain = Console(app, admin)                # no Accept-Language at all
    page = plain.get("/executions").text
    assert '<html lang="en">' in page and "1 execution<" in page and "1 executions" not in page
    assert "Sign out" in page and "退出" not in page
    records = plain.get(f"/executions/{ran.id}").text
    assert "4 records" in records


def test_the_users_setting_beats_the_browser(app, admin, ran):
    console = Console(app, admin)
    console.client.environ_base.update(CHINESE)
    assert "退出登录" in console.get("/overview").text
    console.post("/me/profile", {"email": "", "language": "en"})
    assert User.get(User.username == "ada").language == "en"
    page = console.get("/overview").text
    assert "Sign out" in page and "退出登录" not in page
    console.client.environ_base.update(ENGLISH)
    console.post("/me/profile", {"email": "", "language": "zh_CN"})
    assert "退出登录" in console.get("/overview").text
    assert 'value="zh_CN" lang="zh-CN" selected' in console.get("/me").text
    console.post("/me/profile", {"email": "", "language": ""})      # follow the browser again
    assert User.get(User.username == "ada").language is None
    assert "Sign out" in console.get("/overview").text


def test_a_language_the_console_lacks_is_refused(app, admin):
    console = Console(app, admin)
    answer = console.post_json("/api/v1/me/profile", {"language": "klingon"})
    assert answer.status_code == 409 and "language must be one of en, zh_CN" in answer.json["error"]
    assert User.get(User.username == "ada").language is None
    kept = console.post_json("/api/v1/me/profile", {"email": "ada@example.com"})
    assert kept.status_code == 200 and User.get(User.username == "ada").language is None


def comparable(body):
    """An API answer without what changes between two identical requests (times)."""
    if isinstance(body, dict):
        return {k: comparable(v) for k, v in body.items()
                if k not in ("last_seen", "generated_at", "now")}
    if isinstance(body, list):
        return [comparable(v) for v in body]
    return body


def test_the_api_answers_the_same_english_in_any_language(app, admin, auditor, ran):
    """Scripts parse the API: its answers, messages and errors ignore Accept-Language and the
    user's own setting."""
    User.update(language="zh_CN").where(User.username == "ada").execute()
    english, chinese = Console(app, admin), Console(app, admin)
    english.client.environ_base.update(ENGLISH)
    chinese.client.environ_base.update(CHINESE)
    compared = 0
    for rule, path in route_samples(app, ran):
        if "GET" not in rule.methods or not path.startswith("/api/v1"):
            continue
        a, b = english.get(path), chinese.get(path)
        assert (a.status_code, a.mimetype) == (b.status_code, b.mimetype), path
        if a.mimetype == "application/json":
            assert comparable(a.json) == comparable(b.json), path
            assert not HAN.search(b.text), path
        compared += 1
    assert compared >= 15
    for client in (english, chinese):              # an action's message, errors
        failed_plan = client.post_json("/api/v1/plans/999999/execute")
        assert failed_plan.status_code == 404 and not HAN.search(failed_plan.text)
        bad = client.post_json("/api/v1/nodes/new", {"path": "no slash"})
        assert bad.status_code in (400, 409) and not HAN.search(bad.text)
    saved = [c.post_json("/api/v1/nodes/new", {"path": path}).json["message"]
             for c, path in ((english, "/eu"), (chinese, "/asia"))]
    assert saved == ["node /eu saved", "node /asia saved"]
    said = chinese.post_json(f"/api/v1/executions/{ran.id}/verify").json["message"]
    assert said == "no unverified accounts to verify"


def test_the_check_sees_english(app, admin, ran):
    """The reader the Chinese checks rely on finds the English of an English page (and not
    the names a page shows as data)."""
    english = Console(app, admin).get("/overview").text.replace('<html lang="en">', "<html>")
    left = english_words(english, TECHNICAL | data_words(), EXAMPLES)
    assert {"Overview", "Sign", "out", "Failed", "accounts"} <= left
    assert not {"nightly", "web", "ada", "bob"} & left
    assert english_words('<p translate="no">login refused</p><code>status</code>', set()) == set()


def test_a_rollout_is_said_in_chinese_on_pages_and_english_in_the_api(ctl, chinese, ran):
    from controller.planning import start_execution
    from tests.web_support import save

    plan = save(ctl, "waved", waves=["1", "100%"], max_failures="1",
                window="Mon-Fri 00:00-24:00", asset_limit=1, zone_limit=5, connect_rate=2.5)
    shown = chinese.get(f"/plans/{plan.id}").text
    assert "批次 1,100%，失败熔断 1；维护窗口 Mon-Fri 00:00-24:00；单资产最多 1 个并发" in shown
    assert not english_words(shown, TECHNICAL | data_words(), EXAMPLES)
    execution = start_execution(ctl, plan, started_by="ada")
    page = chinese.get(f"/executions/{execution.id}").text
    assert "第 1 批，共 2 批" in page and not english_words(page, TECHNICAL | data_words(), EXAMPLES)
    said = chinese.get(f"/api/v1/plans/{plan.id}").json["plan"]["rollout"]
    assert said == ["waves 1,100%, brake 1", "window Mon-Fri 00:00-24:00",
                    "at most 1 in flight per asset", "at most 5 in flight per zone",
                    "at most 2.5 new SSH connections/s per zone"]
    state = chinese.get(f"/api/v1/executions/{execution.id}").json["execution"]["state"]
    assert state.startswith("wave 1 of 2")


def test_a_refusal_is_shown_in_the_pages_words_only_when_ours(app):
    from controller.web.views import shown

    with app.test_request_context("/overview", headers={"Accept-Language": "zh-CN"}):
        assert shown("the current password is wrong") == "当前密码错误"
        assert shown("asset web-9 is in execution 4") == "asset web-9 is in execution 4"
        assert shown("") == ""                         # not the catalogue's header
    with app.test_request_context("/api/v1/overview", headers={"Accept-Language": "zh-CN"}):
        assert shown("the current password is wrong") == "the current password is wrong"


LONG_PATH = "/" + "a" * 600            # longer than the node column (`forms.NewNode`)
NOT_A_PATH = "no slash"                 # a segment with a space: `names.node_path` refuses it
REFUSED = ("node: segment no slash is not valid: 1-128 ASCII letters, digits, . _ -, "
           "starting with a letter or digit")


def test_bad_form_values_are_said_in_chinese_on_pages_and_in_english_in_the_api(chinese):
    """A form's field problem (pydantic's, in our words) and a core module's refusal are said
    in the page's language, their data as it is; the API answers the same English as ever."""
    too_long = chinese.post("/nodes/new", {"path": LONG_PATH})
    assert too_long.status_code == 400
    assert "最多 512 个字符" in html.unescape(too_long.text), too_long.text
    refused = chinese.post("/nodes/new", {"path": NOT_A_PATH}, follow_redirects=True)
    text = html.unescape(refused.text)
    assert "路径段 no slash 无效：须为 1-128 个 ASCII 字母" in text, text
    assert "is not valid" not in text
    answered = chinese.post_json("/api/v1/nodes/new", {"path": LONG_PATH})
    assert answered.status_code == 400
    assert answered.json["error"] == "path: at most 512 characters"
    answered = chinese.post_json("/api/v1/nodes/new", {"path": NOT_A_PATH})
    assert answered.status_code == 409 and answered.json["error"] == REFUSED


def test_a_refusal_keeps_its_english_for_the_cli():
    """`str(exc)`, what the CLI prints (and the API, the audit log), is the template filled in
    English; the console's words come from the same template and parameters."""
    from controller import names

    with pytest.raises(names.BadName) as caught:
        names.node_path(NOT_A_PATH)
    assert str(caught.value) == REFUSED
    said = caught.value.said(lambda text: text.replace("is not valid", "IS NOT VALID"))
    assert said.startswith("node: segment no slash IS NOT VALID")


def test_a_bad_schedule_or_window_is_said_in_chinese_on_the_plan_form(chinese):
    """The calendar's refusals (controller.scheduling, controller.windows) on a Chinese page,
    unchanged English through the API."""
    form = {"name": "weekly", "usernames": "alice", "nodes": "/prod", "strategy": "random",
            "secret_type": "password", "length": "20", "lowercase": "on", "digits": "on",
            "schedule": "crontab", "crontab": "0 2 * *", "window": "Mon-Fri 25:00-05:00",
            "active": "on"}
    text = html.unescape(chinese.post("/plans/new", form).text)
    assert "crontab '0 2 * *'：有 4 个字段，应为 5 个" in text, text
    assert "25:00 不是有效的时刻" in text, text
    assert "fields instead of" not in text and "is not a time of day" not in text
    answered = chinese.post_json("/api/v1/plans/new", form | {"usernames": ["alice"],
                                                               "nodes": ["/prod"]})
    said = json.dumps(answered.json, ensure_ascii=False)
    assert answered.status_code == 422
    assert "crontab '0 2 * *': 4 fields instead of 5; use five fields" in said, said
    assert "25:00 is not a time of day (00:00 to 24:00)" in said, said


def test_a_refused_webhook_is_said_in_chinese_on_the_page_and_in_english_in_the_api(chinese,
                                                                                      admin):
    form = {"name": "siem", "url": "ftp://example.invalid/hook", "events": "io.keyturn.record.*"}
    page = chinese.post("/webhooks/new", form | {"code": next_code(admin)}, follow_redirects=True)
    text = html.unescape(page.text)
    assert "URL：须为带主机名的 http:// 或 https://" in text, text
    assert "must be http://" not in text
    answered = chinese.post_json("/api/v1/webhooks/new", form | {"code": next_code(admin)})
    assert answered.json["error"] == "url: must be http:// or https:// with a host", answered.json
