"""The steps every UNIX-like platform takes to change an account's secret; a platform module
only says which commands do each step there (look up, create, set a password, run as a user).

Order matters for the rotation protocol: input checks, look-ups, account creation and sudo
rules all come before the one command that sets the secret (chpasswd, or the rename that puts
a new authorized_keys in place), so `ChangeFailed` always means the old secret still works.
Files are written without a shell: read by a command, computed here, written from stdin to a
draft beside the file and renamed over it, so a half-written file is never in place.
"""
from __future__ import annotations

import secrets as random
from typing import Callable, NamedTuple

from shared.bounded import USERNAME
from shared.messages import RotateCommand
from worker import authorized_keys, sshkeys
from worker.platforms import values
from worker.platforms.become import Root
from worker.platforms.refusals import ChangeFailed, must, password_refusal
from worker.ssh import Completed

SUDOERS_DIR = "/etc/sudoers.d"
Run = Callable[..., Completed]


class Account(NamedTuple):
    """What the key steps need to know about an existing account."""

    home: str
    group: str


class UnixDriver:
    """Changes one account's password or key through `Root`; subclasses build the commands."""

    default_shell: str
    password_argv: list[str]    # reads `user:password` lines on stdin

    def lookup_argv(self, user: str) -> list[str]:
        raise NotImplementedError

    def user_missing(self, done: Completed) -> bool:
        """Whether the look-up says there is no such user."""
        raise NotImplementedError

    def parse_lookup(self, stdout: str) -> Account:
        raise NotImplementedError

    def create_argv(self, user: str, new: values.NewUser) -> list[str]:
        """Create `user` with its home directory."""
        raise NotImplementedError

    def as_user(self, user: str, argv: list[str]) -> list[str]:
        """`argv` run by root as `user`, so files in the user's home are touched with the user's
        own rights only: a symlink planted there cannot make root read or write elsewhere."""
        raise NotImplementedError

    def check(self, command: RotateCommand) -> None:
        """Refuse, before anything is sent, a command whose values cannot be set safely."""
        user, params = command.username, command.params
        if not USERNAME.match(user):   # the schema checks it too; chpasswd lines rely on it
            raise ChangeFailed("bad_username", f"{user!r} is not a valid user name")
        if command.new_secret is None:
            raise ChangeFailed("bad_command", "a rotate command without a new secret")
        new = command.new_secret.get_secret_value()
        if command.secret_type == "ssh_key":
            try:
                sshkeys.public_line(new)
            except sshkeys.BadKey as exc:
                raise ChangeFailed("unsupported_secret", f"the new key for {user}: {exc}") from None
        elif any(char in new for char in "\n\r\0"):
            raise ChangeFailed("unsupported_secret", f"the new password for {user} contains a line "
                                                     f"break or NUL, which chpasswd cannot set")
        if params.create_user:
            values.new_user(user, params, self.default_shell)
        if params.modify_sudo:
            values.sudoers_line(user, params.sudo_commands)

    def change(self, root: Root, command: RotateCommand) -> None:
        """Set `command.new_secret` for `command.username`, first creating the account and
        granting sudo when the plan says so. Raises `ChangeFailed` when the host refused
        (nothing changed) and `SshError` when the connection failed; `SshError.command_sent`
        is True only if the secret itself may have changed."""
        self.check(command)
        account = self.account(root, command) if self.needs_account(command) else None
        if command.params.modify_sudo:
            self.grant_sudo(root, command)
        if command.secret_type == "password":
            line = f"{command.username}:{command.new_secret.get_secret_value()}\n"
            done = root.run(self.password_argv, line.encode(), sets_secret=True)
            if done.status != 0:
                if account is None:   # chpasswd through PAM does not say the user is missing
                    self.account(root, command)
                raise password_refusal(done, command)
        else:
            self.set_key(root, command, account)

    @staticmethod
    def needs_account(command: RotateCommand) -> bool:
        """Whether the change must look the account up first. A plain password change need
        not: chpasswd refuses a missing user, and only then is the user looked up (to name
        the failure), which saves each account a command (a channel, a shell, two round
        trips). Keys need the home directory; creating the user, or a sudo rule, must first
        know that the user exists."""
        params = command.params
        return command.secret_type != "password" or params.create_user or params.modify_sudo

    def account(self, root: Root, command: RotateCommand) -> Account:
        """The account as it is, or as created when it is missing and the plan allows it."""
        user, asset = command.username, command.asset.name
        account = self.lookup(root, command)
        if account is None and command.params.create_user:
            new = values.new_user(user, command.params, self.default_shell)
            must(root.run(self.create_argv(user, new)), f"cannot create user {user} on {asset}",
                 "create_failed")
            account = self.lookup(root, command)
        if account is None:
            raise ChangeFailed("user_missing", f"user {user} does not exist on {asset}")
        return account

    def lookup(self, root: Root, command: RotateCommand) -> Account | None:
        """The account, None when it does not exist (as the login: this needs no privilege)."""
        done = root.look(self.lookup_argv(command.username))
        if self.user_missing(done):
            return None
        failure = f"cannot look up user {command.username} on {command.asset.name}"
        must(done, failure, "lookup_failed")
        try:
            return self.parse_lookup(done.stdout)
        except (IndexError, KeyError, ValueError):
            raise ChangeFailed("lookup_failed", f"{failure}: unexpected output") from None

    def set_key(self, root: Root, command: RotateCommand, account: Account) -> None:
        """Put the new key's public line into ~/.ssh/authorized_keys by the plan's strategy.
        Root only makes a missing ~/.ssh (0700) and hands it to the user; as the user, the
        file is read, and the new one (0600) written beside it and renamed over it."""
        user, asset = command.username, command.asset.name
        folder = f"{account.home.rstrip('/')}/.ssh"
        path = f"{folder}/authorized_keys"
        for argv in (["mkdir", "-p", "-m", "0700", folder],
                     ["chown", "-h", f"{user}:{account.group}", folder]):
            must(root.run(argv), f"cannot prepare {folder} for {user} on {asset}")

        def as_user(argv: list[str], stdin: bytes = b"", **options) -> Completed:
            return root.run(self.as_user(user, argv), stdin, **options)

        current = self.read_keys(as_user, path, command)
        public = sshkeys.public_line(command.new_secret.get_secret_value())
        text = authorized_keys.updated(current.decode("utf-8", "surrogateescape"), public,
                                       command.params.key_strategy)
        content = text.encode("utf-8", "surrogateescape")
        if content != current:
            _replace(as_user, path, content, "0600", where=asset, sets_secret=True)

    def read_keys(self, as_user: Run, path: str, command: RotateCommand) -> bytes:
        """The authorized_keys file as the user reads it; b"" when it is missing or hidden from
        the user. Only a regular file is opened, and at most `SIZE_LIMIT` bytes of it: a FIFO
        would block for good and /dev/zero never end; a read that blocks anyway (a FIFO swapped
        in after the check) is killed on the host when `bounded` can."""
        asset, limit = command.asset.name, authorized_keys.SIZE_LIMIT
        if as_user(["test", "-f", path]).status != 0:
            if as_user(["test", "-e", path]).status != 0:
                return b""
            raise ChangeFailed("unsafe_file", f"{path} on {asset} is not a regular file (a FIFO, "
                                              f"a device, or a link to one): refused to read it")
        done = as_user(self.bounded(["head", "-c", str(limit + 1), path], command.timeout),
                       binary=True)
        must(done, f"cannot read {path} on {asset}")
        if len(done.stdout) > limit:
            raise ChangeFailed("file_too_large", f"{path} on {asset} is larger than "
                                                 f"{limit // 1024} KiB: refused to rewrite it")
        return done.stdout

    def bounded(self, argv: list[str], seconds: float) -> list[str]:
        """`argv`, killed on the host after `seconds` (closing the channel does not end a
        process blocked in open())."""
        return ["timeout", f"{seconds:g}", *argv]

    def grant_sudo(self, root: Root, command: RotateCommand) -> None:
        """Install `/etc/sudoers.d/keyturn-<user>` only after `visudo` accepted it (as a draft
        whose name has a dot, which sudo skips), so a broken rule never reaches sudo."""
        user = command.username
        path = f"{SUDOERS_DIR}/keyturn-{user.replace('.', '%')}"   # `%`: no user name has one
        _replace(root.run, path, values.sudoers_line(user, command.params.sudo_commands).encode(),
                 "0440", where=command.asset.name, check=["visudo", "-c", "-f"])


def _replace(run: Run, path: str, content: bytes, mode: str, *, where: str,
             check: list[str] | None = None, sets_secret: bool = False) -> None:
    """Write `content` to a draft beside `path` (`tee`), give it `mode`, have `check` accept it,
    and rename it over `path`; a failed step removes the draft. Only the rename may `sets_secret`."""
    folder, name = path.rsplit("/", 1)
    draft = f"{folder}/.{name}.keyturn-{random.token_hex(6)}"
    steps = [(["tee", draft], content, False), (["chmod", mode, draft], b"", False)]
    if check:
        steps.append(([*check, draft], b"", False))
    steps.append((["mv", "-f", draft, path], b"", sets_secret))
    for argv, stdin, final in steps:
        done = run(argv, stdin, sets_secret=final)
        if done.status != 0:
            run(["rm", "-f", draft])
            must(done, f"cannot write {path} on {where} ({argv[0]} failed)")
