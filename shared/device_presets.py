"""Preset dialogues of the `device` platform, in the format of `shared.dialogues`: pick one with
the `preset` param, or copy one into the `dialogue` param and edit it for your device.

Only `linux-passwd` is tested against a real system here (the sshd test hosts). The Cisco,
Huawei and H3C dialogues follow those vendors' documented commands and prompts but were not run
against a real device: try one on a lab device before a plan uses it.
"""
from __future__ import annotations

PRESETS: dict[str, str] = {
    "linux-passwd": r"""
# Linux and most UNIX-like appliances: `sudo passwd` by a sudoer (NOPASSWD, or add
#   expect (?i)\[sudo\] password
#   send {login_secret}
# after the first send) or by root. Tested on the sshd test hosts.
timeout 10
fail (?i)sorry|not allowed|does not exist|unknown user|password unchanged
fail (?i)manipulation error|a password is required|permission denied
expect [$#] ?$
send sudo passwd {username}
expect (?i)new password: ?$
change {new_secret}
expect (?i)(retype|re-enter|again).*: ?$
send {new_secret}
expect (?i)updated successfully
""",
    "cisco-ios": r"""
# Cisco IOS / IOS-XE: a local user's secret, by a login that enters enable mode with the
# asset's `enable` account's secret. A login that lands in privileged mode (privilege 15)
# gets no password prompt: drop the enable lines. IOS reads `?` as a request for help, so
# keep `?` out of the plan's symbols. Not tested against a real device.
timeout 15
fail % ?(Invalid input|Incomplete command|Ambiguous command|Access denied|Bad secrets)
expect [>#]\s*$
send enable
expect (?i)password:\s*$
send {enable_secret}
expect #\s*$
send terminal length 0
expect #\s*$
send configure terminal
expect \(config\)#\s*$
change username {username} secret {new_secret}
expect \(config\)#\s*$
send end
expect #\s*$
timeout 60
send write memory
expect \[OK\]
""",
    "huawei-vrp": r"""
# Huawei VRP (V5, V8): a local user's password in the AAA view, then `save`.
# Not tested against a real device.
timeout 15
fail (?i)error:|unrecognized command|incomplete command|too many parameters
expect [>\]]\s*$
send screen-length 0 temporary
expect >\s*$
send system-view
expect \]\s*$
send aaa
expect -aaa\]\s*$
change local-user {username} password irreversible-cipher {new_secret}
expect -aaa\]\s*$
send return
expect >\s*$
timeout 60
send save
expect (?i)\[Y/N\]
send y
expect (?i)successfully|>\s*$
""",
    "h3c-comware": r"""
# H3C Comware 7: a local management user's password, then `save force`.
# Not tested against a real device.
timeout 15
fail % ?(Unrecognized command|Incomplete command|Wrong parameter|Too many parameters)
expect [>\]]\s*$
send screen-length disable
expect >\s*$
send system-view
expect \]\s*$
send local-user {username} class manage
expect -luser-manage-[^\]]*\]\s*$
change password simple {new_secret}
expect -luser-manage-[^\]]*\]\s*$
send return
expect >\s*$
timeout 60
send save force
expect (?i)successfully|>\s*$
""",
}


def preset_lines(name: str) -> list[str]:
    return PRESETS[name].strip().splitlines()
