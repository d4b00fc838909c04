"""qmail-remote-route: the decision for a domain and a sender, and why; never the secret."""

import os
import subprocess

SECRET = "pw-must-not-show"


def route_of(home, *args):
    done = subprocess.run([os.path.join(home.bindir, "qmail-remote-route")] + list(args), capture_output=True,
                          env=home.env(), timeout=30)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def test_smtproutes_auth_route_is_explained_without_the_secret(home):
    home.route("# providers", "example.org:smtp.provider.test;s465|alice|" + SECRET + "|192.0.2.7")
    status, out, _ = route_of(home, "example.org", "joe@src.example")
    assert status == 0
    assert "rule:     control/smtproutes line 2: smtproutes matches the host (key example.org)" in out
    assert "relay:    smtp.provider.test\nport:     465\nprotocol: SMTPS (implicit TLS" in out
    assert "source:   192.0.2.7 (the route's localip)" in out
    assert "helo:     me.example (control/me)" in out
    assert "auth:     user alice" in out and "inline in control/smtproutes line 2" in out
    assert SECRET not in out


def test_authsenders_domainips_and_credentials_file(home):
    secret = os.path.join(home.path, "control", "cred")
    with open(secret, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(secret, 0o640)
    home.route(":mx.default.test")
    home.control("authsenders", "@src.example:relay.test;587|bob|file:control/cred\n")
    home.control("domainips", "src.example:192.0.2.9|mail.src.example\n")
    status, out, _ = route_of(home, "example.org", "Joe@SRC.example")
    assert status == 0, out
    assert "control/authsenders line 1: authsenders matches the sender (key @src.example)" in out
    assert "tls:      STARTTLS when offered (a route with AUTH)" in out
    assert "source:   192.0.2.9 (control/domainips, for src.example)" in out
    assert "helo:     mail.src.example (control/domainips, for src.example)" in out
    assert "credentials file control/cred (mode 640)" in out and SECRET not in out


def test_bounce_and_mx(home):
    home.route("!@:bounces.test", "other.org:relay.test")
    status, out, _ = route_of(home, "example.org")
    assert "smtproutes line 1: the sender is empty (a bounce)" in out and "relay:    bounces.test" in out
    status, out, _ = route_of(home, "example.org", "a@b.example")
    assert "rule:     no route: the MX records of the domain" in out


def test_a_bad_line_is_the_z_text_and_111(home):
    home.route("example.org:relay.test;587|user")
    status, out, err = route_of(home, "example.org", "a@b.example")
    assert status == 111 and out == ""
    assert err == ("qmail-remote-route: fatal: Invalid control file control/smtproutes: line 1: a user without a "
                   "password or file:PATH. (#4.3.0)\n")
