"""Every error of ingest's own code is answered from the one table in `ingest.http.errors`."""

import inspect

from ingest import domain_errors
from ingest.http.errors import ANSWERS


def test_every_domain_error_has_its_answer() -> None:
    declared = {
        member
        for _, member in inspect.getmembers(domain_errors, inspect.isclass)
        if issubclass(member, Exception) and member.__module__ == domain_errors.__name__
    }
    assert len(declared) >= 6
    assert declared <= set(ANSWERS), declared - set(ANSWERS)  # else it would be a bare 500
