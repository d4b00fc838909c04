"""The report table (failures.py): every row makes a class, every text is a report line."""

import pytest

from qremote import failures
from qremote.smtp.reply import Reply


@pytest.mark.parametrize("name", sorted(failures.TABLE))
def test_every_row_is_an_exception_class_with_a_text(name):
    cls = getattr(failures, name)
    assert issubclass(cls, failures.Failure) and cls.__name__ == name
    assert getattr(failures, name) is cls  # made once, then kept
    values = {"ip": b"192.0.2.1", "reply": Reply(550, b"550 no\n"), "size": 9, "limit": 5,
              "fdr": 6, "fdw": 7}
    failure = cls(*[values.get(field, "x\x01y") for field, _ in cls.fields])
    text = failure.text()
    assert text.endswith(b"\n") and b"\0" not in text and b"\x01" not in text
    assert failure.letter in (failures.D, failures.Z)


def test_from_import_of_a_row():
    from qremote.failures import GreetingFailed
    assert GreetingFailed is failures.GreetingFailed and GreetingFailed.polite


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        failures.NoSuchFailure


@pytest.mark.parametrize("code,letter", [(550, failures.D), (451, failures.Z), (None, failures.Z)])
def test_by_reply_letters(code, letter):
    assert failures.SenderRejected(b"192.0.2.1", Reply(code, b"x\n")).letter == letter


def test_control_invalid_is_a_kind_of_control_unreadable():
    assert issubclass(failures.ControlInvalid, failures.ControlUnreadable)
    assert failures.ControlInvalid("me", "bad").text() == b"Invalid control file control/me: bad. (#4.3.0)\n"


def test_a_tls_reason_does_not_end_in_two_full_stops():
    why = failures.tls_reason("name", "IP address mismatch, certificate is not valid for '127.0.0.1'.")
    assert why == b"certificate name mismatch: IP address mismatch, certificate is not valid for '127.0.0.1'"
    assert failures.TLSRequired([(b"127.0.0.1", why)], 0).text().endswith(b"'127.0.0.1'). (#4.7.5)\n")
