"""zonal doctor with passwords holding URL-special characters, raw and percent-encoded:
no piece of the password in what it prints, and a raw '@' or '/' is refused with the
fix (percent-encode), before anything connects."""

from __future__ import annotations

import argparse
import io
from urllib.parse import quote_plus

from hypothesis import HealthCheck, given, settings

from tests.reliability.test_url_secrets import _assert_clean, passwords
from zonal_tools.doctor import cli


def _doctor(url: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([url, "--connect-timeout", "0.2", "--timeout", "1"])
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(args, stdout=out, stderr=err)
    return code, out.getvalue() + err.getvalue()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords)
def test_doctor_never_prints_a_piece_of_the_password(password: str) -> None:
    raw = f"postgresql://app:{password}@127.0.0.1:1/appdb"
    for url in (raw, f"postgresql://app:{quote_plus(password)}@127.0.0.1:1/appdb"):
        code, text = _doctor(url)
        assert code == 2  # nothing listens on port 1: it cannot run
        _assert_clean(password, text)
        if url is raw and any(c in password for c in "@/ "):
            assert "percent-encode" in text, text
