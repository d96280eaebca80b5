import string
from collections import Counter

import pytest

from controller.secretgen import (DEFAULT_SYMBOLS, PasswordRules, RuleError, uniform_choices,
                                  validate_given_secret)


def test_default_password_has_every_class_and_length():
    for _ in range(200):
        password = PasswordRules().generate()
        assert len(password) == 16
        assert any(c in string.ascii_lowercase for c in password)
        assert any(c in string.ascii_uppercase for c in password)
        assert any(c in string.digits for c in password)
        assert any(c in DEFAULT_SYMBOLS for c in password)
        assert set(password) <= set(string.ascii_letters + string.digits + DEFAULT_SYMBOLS)


def test_rules_are_honoured():
    rules = PasswordRules(length=40, uppercase=False, symbols=True, exclude_symbols="!#$%&()")
    rules.validate()
    for _ in range(100):
        password = rules.generate()
        assert len(password) == 40
        assert not set(password) & set(string.ascii_uppercase + "!#$%&()")


def test_passwords_differ():
    assert len({PasswordRules().generate() for _ in range(1000)}) == 1000


def test_many_passwords_at_once_each_follow_the_rules():
    rules = PasswordRules(length=8, symbols=True, exclude_symbols=DEFAULT_SYMBOLS[1:])   # one symbol
    passwords = rules.generate_many(5000)
    assert len(passwords) == 5000 and len(set(passwords)) == 5000
    for password in passwords:
        assert len(password) == 8 and DEFAULT_SYMBOLS[0] in password
        assert set(password) & set(string.digits) and set(password) & set(string.ascii_uppercase)


@pytest.mark.parametrize("rules,field", [
    (PasswordRules(length=7), "length"),
    (PasswordRules(length=65), "length"),
    (PasswordRules(lowercase=False, uppercase=False, digits=False, symbols=False), "rules"),
    (PasswordRules(exclude_symbols=DEFAULT_SYMBOLS), "exclude_symbols"),
    (PasswordRules(exclude_symbols="x"), "exclude_symbols"),
])
def test_unsatisfiable_rules_are_refused(rules, field):
    with pytest.raises(RuleError) as caught:
        rules.validate()
    assert caught.value.field == field


@pytest.mark.parametrize("secret", ["", "two\nlines", "nul\x00", "x" * 1025])
def test_unusable_given_secrets_are_refused(secret):
    with pytest.raises(RuleError):
        validate_given_secret(secret)


def test_characters_and_positions_are_uniform():
    """No modulo bias over an alphabet that does not divide 256, and no position bias from the
    class requirements: every position of a password draws from the whole alphabet."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&()*+,-.:;<=?@[]_~"
    counts = Counter(uniform_choices(alphabet, 170_000))
    expected = 170_000 / len(alphabet)
    assert set(counts) == set(alphabet)
    assert all(abs(n - expected) < 0.12 * expected for n in counts.values())
    rules = PasswordRules(length=8, uppercase=False, symbols=False)      # 26 letters, 10 digits
    for position in (0, 7):
        digits = sum(rules.generate()[position] in string.digits for _ in range(6000))
        # P(digit at a position | 8 chars hold >= 1 letter and >= 1 digit) = 0.300 (forcing one
        # character per class and shuffling would give 0.333)
        assert abs(digits / 6000 - 0.300) < 0.02
