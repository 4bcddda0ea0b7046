"""The resolver's fast DNS readers agree with dnspython where they answer, and give up where unsure."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from osbox.server.egress.dnswire import read_answer, read_question
from osbox.server.egress.resolver import MAX_TTL


def response(name: str, records: list[tuple[str, int, str]]) -> dns.message.Message:
    """A response to an A query for `name` with (type, TTL, value) answer records."""
    answer = dns.message.make_response(dns.message.make_query(name, "A"))
    for rdtype, ttl, value in records:
        answer.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", rdtype, value))
    return answer


@pytest.mark.parametrize(
    "name", ["allowed.test", "cdn.allowed.test", "Mixed-Case.Example", "_srv._tcp.x.test"]
)
@pytest.mark.parametrize("rdtype", ["A", "AAAA", "TXT", "HTTPS"])
def test_a_plain_question_reads_as_dnspython_reads_it(name: str, rdtype: str) -> None:
    query = dns.message.make_query(name, rdtype, use_edns=True)
    question = read_question(query.to_wire())
    assert question is not None
    assert question.name == query.question[0].name.to_text(omit_final_dot=True)
    assert question.rdtype == dns.rdatatype.from_text(rdtype)


def test_anything_unusual_is_left_to_dnspython() -> None:
    plain = dns.message.make_query("allowed.test", "A").to_wire()
    assert read_question(plain[:11]) is None  # no header
    assert read_question(plain[:-3]) is None  # the question cut short
    assert read_question(dns.message.make_query("we\\.ird.test", "A").to_wire()) is None  # escaped text
    assert read_question(dns.message.make_query(".", "NS").to_wire()) is None  # the root
    answered = response("allowed.test", [("A", 60, "198.18.0.10")]).to_wire()
    assert read_question(answered) is None  # a response, not a query


@given(st.binary(max_size=64))
def test_garbage_never_raises(wire: bytes) -> None:
    read_question(wire)
    read_answer(wire, MAX_TTL)


def test_an_answer_gives_its_addresses_and_lowers_long_ttls_in_place() -> None:
    message = response(
        "allowed.test",
        [("CNAME", 30, "cdn.allowed.test."), ("A", 7200, "198.18.0.10"), ("AAAA", 120, "2001:2::10")],
    )
    message.answer.append(dns.rrset.from_text("cdn.allowed.test.", 90, "IN", "A", "198.18.0.12"))
    wire = message.to_wire()
    answer = read_answer(wire, MAX_TTL)
    assert answer is not None
    assert answer.addresses == [
        (ipaddress.ip_address("198.18.0.10"), MAX_TTL),
        (ipaddress.ip_address("2001:2::10"), 120),
        (ipaddress.ip_address("198.18.0.12"), 90),
    ]
    reparsed = dns.message.from_wire(answer.wire)
    assert [rrset.ttl for rrset in reparsed.answer] == [30, MAX_TTL, 120, 90]
    unchanged = response("allowed.test", [("A", 60, "198.18.0.10")]).to_wire()
    kept = read_answer(unchanged, MAX_TTL)
    assert kept is not None and kept.wire is unchanged


def test_a_truncated_answer_is_left_to_dnspython() -> None:
    wire = response("allowed.test", [("A", 60, "198.18.0.10")]).to_wire()
    assert read_answer(wire[:-2], MAX_TTL) is None
    assert read_answer(dns.message.make_query("allowed.test", "A").to_wire(), MAX_TTL) is None
