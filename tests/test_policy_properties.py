"""Properties of the address policy and the tool input rules, checked with hypothesis.

Address policy (core/net_policy.py): no IPv6 spelling of an IPv4 address the policy
refuses is allowed, and the forms decided by their IPv4 alone (mapped, NAT64, 6to4) are
treated exactly like it. Tool input (core/tools.py, activities/email_tool.py): whatever
carries a control character is refused before approval; whatever is accepted builds an
email whose one To address is the input and whose headers hold no control character,
and the tools themselves never refuse what the run accepted.

Pure functions only, bounded (`BOUNDED`): the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import email
import ipaddress
from collections.abc import Callable
from datetime import timedelta
from email import policy
from typing import Any

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from activities.email_tool import Refused, build_message
from activities.http_tools import split_headers
from core.net_policy import (
    DestinationRefused,
    check_declared_url,
    embedded_ipv4,
    is_public_address,
    system_resolver,
)
from core.tools import (
    LINE_BREAKS,
    builtin_definitions,
    control_character_in,
    header_problem,
    input_problem,
)
from core.types import ToolCall

BOUNDED = settings(max_examples=200, deadline=timedelta(milliseconds=500), database=None)
SENDER = "crew@example.com"
SEND_EMAIL = builtin_definitions()["send_email"]["input_schema"]
HTTP_REQUEST = builtin_definitions()["http_request"]["input_schema"]
EMAIL = {"to": "bob@example.com", "subject": "Launch day", "body": "We launch on Monday."}

# ------------------------------------------------------------------------ strategies

ipv4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
# Weighted towards the special-purpose ranges, where the policy's answers change.
special_ipv4 = st.one_of(
    ipv4,
    st.sampled_from([
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    ]).flatmap(lambda net: st.builds(
        lambda n, offset: n[offset % n.num_addresses],
        st.just(ipaddress.IPv4Network(net)), st.integers(0, 2**32 - 1))),
)
bits16 = st.integers(0, 2**16 - 1)
bits32 = st.integers(0, 2**32 - 1)
bits64 = st.integers(0, 2**64 - 1)


def v6(value: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(value)


# Every way an IPv6 address carries an IPv4 one: (name, strategy of embed(v4) -> IPv6).
Embedding = Callable[[ipaddress.IPv4Address], ipaddress.IPv6Address]


def _not_isatap(iid: int) -> bool:
    return (iid >> 32) & 0xFCFF_FFFF != 0x5EFE


EMBEDDINGS: dict[str, st.SearchStrategy[Embedding]] = {
    "mapped": st.just(lambda a: v6(0xFFFF << 32 | int(a))),
    "compatible": st.just(lambda a: v6(int(a))),
    "translated": st.just(lambda a: v6(0xFFFF << 48 | int(a))),
    "nat64": st.just(lambda a: v6(0x64FF9B << 96 | int(a))),
    "nat64-local": st.builds(
        lambda low: lambda a: v6(0x64FF9B0001 << 80 | (low << 32) | int(a)),
        st.integers(0, 2**48 - 1)),
    "6to4": st.builds(
        lambda subnet, iid: lambda a: v6(0x2002 << 112 | int(a) << 80 | subnet << 64 | iid),
        bits16, bits64.filter(_not_isatap)),
    "teredo-server": st.builds(
        lambda flags, client: lambda a: v6(0x2001 << 112 | int(a) << 64 | flags << 32 | client),
        bits32, bits32),
    "teredo-client": st.builds(
        lambda server, flags: lambda a: v6(
            0x2001 << 112 | server << 64 | flags << 32 | (~int(a) & 0xFFFF_FFFF)),
        bits32, bits32),
    "isatap": st.builds(
        lambda prefix, u: lambda a: v6(prefix << 64 | (u << 56 | 0x5EFE) << 32 | int(a)),
        bits64, st.integers(0, 3)),
}
any_embedding = st.sampled_from(sorted(EMBEDDINGS)).flatmap(
    lambda name: st.tuples(st.just(name), EMBEDDINGS[name]))

# ------------------------------------------------------------------- address policy


@BOUNDED
@given(special_ipv4, any_embedding)
def test_every_ipv6_form_of_a_refused_ipv4_is_refused(
    address: ipaddress.IPv4Address, embedding: tuple[str, Embedding]
) -> None:
    assume(not is_public_address(str(address)))
    name, embed = embedding
    embedded = embed(address)
    assert not is_public_address(str(embedded)), (name, str(embedded))
    assert not is_public_address(embedded.exploded), (name, embedded.exploded)


@BOUNDED
@given(special_ipv4, any_embedding)
def test_the_embedded_ipv4_is_found_in_every_form(
    address: ipaddress.IPv4Address, embedding: tuple[str, Embedding]
) -> None:
    name, embed = embedding
    embedded = embed(address)
    assume(int(embedded) > 1)  # :: and ::1 are themselves, not IPv4-compatible forms
    assert address in [v4 for _, v4 in embedded_ipv4(embedded)], (name, str(embedded))


@BOUNDED
@given(special_ipv4)
def test_mapped_and_nat64_forms_are_treated_exactly_like_their_ipv4(
    address: ipaddress.IPv4Address,
) -> None:
    public = is_public_address(str(address))
    assert is_public_address(f"::ffff:{address}") == public
    assert is_public_address(str(v6(0xFFFF << 32 | int(address)))) == public  # ::ffff:7f00:1
    assert is_public_address(f"64:ff9b::{address}") == public


@BOUNDED
@given(special_ipv4, bits16, bits64.filter(_not_isatap))
def test_a_6to4_address_is_treated_like_its_ipv4(
    address: ipaddress.IPv4Address, subnet: int, iid: int
) -> None:
    sixtofour = v6(0x2002 << 112 | int(address) << 80 | subnet << 64 | iid)
    assert is_public_address(str(sixtofour)) == is_public_address(str(address))


@BOUNDED
@given(st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                 st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)))
def test_multicast_is_never_public_and_the_answer_does_not_depend_on_spelling(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    if address.is_multicast:
        assert not is_public_address(str(address))
    if isinstance(address, ipaddress.IPv6Address):
        assert is_public_address(str(address)) == is_public_address(address.exploded)


@settings(max_examples=100, deadline=timedelta(milliseconds=500), database=None)
@given(special_ipv4, any_embedding)
def test_a_bracketed_literal_of_a_refused_form_is_refused_for_a_webhook(
    address: ipaddress.IPv4Address, embedding: tuple[str, Embedding]
) -> None:
    # The whole path: httpx parses the URL, the system resolver answers the literal.
    assume(not is_public_address(str(address)))
    _, embed = embedding
    url = f"https://[{embed(address)}]:8443/hook"
    with pytest.raises(DestinationRefused, match="non-public"):
        asyncio.run(check_declared_url(url, (), resolver=system_resolver))


# ----------------------------------------------------------------------------- email

CONTROLS = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
    st.sampled_from(sorted(LINE_BREAKS | set("\u202a\u202e\u2066\u2069"))),
)
ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
atom = st.text(alphabet=ATEXT, min_size=1, max_size=12)
label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
tld = st.from_regex(r"[a-z][a-z0-9]{1,6}", fullmatch=True)
addresses = st.builds(
    lambda local, labels, top: f"{'.'.join(local)}@{'.'.join([*labels, top])}",
    st.lists(atom, min_size=1, max_size=3), st.lists(label, min_size=1, max_size=3), tld,
).filter(lambda a: len(a.split("@")[0]) <= 64)
# Any text at all, and text that is nearly an address.
texts = st.text(max_size=40)
near_addresses = st.one_of(
    texts, addresses,
    st.builds(lambda a, i, junk: a[:i] + junk + a[i:], addresses, st.integers(0, 80),
              st.text(min_size=1, max_size=3)),
)
subjects = st.text(min_size=1, max_size=60)


def with_inserted(value: str, index: int, char: str) -> str:
    index %= len(value) + 1
    return value[:index] + char + value[index:]


def call_for(tool_input: dict[str, Any]) -> ToolCall:
    return ToolCall(run_id="ckruntest", tool_use_id="toolu_1", name="send_email",
                    input=tool_input, custom=None, step=0, round=0, position=0)


@BOUNDED
@given(st.sampled_from(["to", "subject"]), st.integers(0, 400), CONTROLS)
def test_a_control_character_in_an_email_header_field_is_refused_before_approval(
    field: str, index: int, char: str
) -> None:
    tool_input = {**EMAIL, field: with_inserted(EMAIL[field], index, char)}
    problem = input_problem(SEND_EMAIL, tool_input)
    assert problem is not None and problem.startswith(f"{field}:"), problem
    assert f"U+{ord(char):04X}" in problem
    with pytest.raises(Refused):  # the tool's own check, the second line
        build_message(SENDER, call_for(tool_input))


@BOUNDED
@given(addresses, st.integers(0, 400),
       st.sampled_from(list(',;<>"()[]\\: \t') + ["\u00a0", "\u3000"]), addresses)
def test_an_email_field_never_holds_more_than_one_plain_address(
    first: str, index: int, separator: str, second: str
) -> None:
    for to in (with_inserted(first, index, separator), f"{first}{separator}{second}",
               f"Bob {separator}{first}>"):
        problem = input_problem(SEND_EMAIL, {**EMAIL, "to": to})
        assert problem is not None and problem.startswith("to:"), (to, problem)


@BOUNDED
@given(near_addresses, subjects, st.text(max_size=80))
def test_accepted_input_builds_one_recipient_and_clean_headers(
    to: str, subject: str, body: str
) -> None:
    tool_input = {"to": to, "subject": subject, "body": body}
    refused = input_problem(SEND_EMAIL, tool_input)
    event("refused" if refused else "accepted")
    if refused is not None:
        return
    # What the run accepted, the tool sends (it never refuses after an approval)...
    message = build_message(SENDER, call_for(tool_input))
    # ...to exactly that one address, read back as a mail program reads it...
    assert [a.addr_spec for a in message["To"].addresses] == [to]
    parsed = email.message_from_bytes(message.as_bytes(), policy=policy.default)
    assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [("", to)]
    assert parsed["Subject"] == subject
    assert parsed.get_all("To") == [to] and parsed.get_all("Cc") is None
    assert parsed.get_all("Bcc") is None
    # ...with no control character in any header.
    for name, value in [*message.items(), *parsed.items()]:
        assert control_character_in(str(value)) is None, (name, value)


@BOUNDED
@given(addresses)
def test_every_generated_plain_address_is_accepted(to: str) -> None:
    assert input_problem(SEND_EMAIL, {**EMAIL, "to": to}) is None


@BOUNDED
@given(st.sampled_from(sorted(LINE_BREAKS)))
def test_a_trailing_line_break_is_refused_in_every_field(char: str) -> None:
    for field in ("to", "subject"):
        problem = input_problem(SEND_EMAIL, {**EMAIL, field: EMAIL[field] + char})
        assert problem is not None and "line break" in problem, (field, problem)


# ---------------------------------------------------------------------- http_request

header_names = st.one_of(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True),
                         st.text(min_size=1, max_size=12))
header_values = st.one_of(st.from_regex(r"[\x20-\x7e]{0,20}", fullmatch=True),
                          st.text(max_size=20))


@BOUNDED
@given(st.dictionaries(header_names, header_values, max_size=4))
def test_http_headers_the_run_accepts_the_tool_sends(headers: dict[str, str]) -> None:
    tool_input = {"url": "https://api.example.com/v1", "headers": headers}
    if input_problem(HTTP_REQUEST, tool_input) is None:
        kept, _ = split_headers(headers)
        assert header_problem(kept) is None
    else:
        assert any(control_character_in(n + v) or not v.isascii() or not n.isascii()
                   or not n or any(c in n for c in ' "(),/:;<=>?@[\\]{}')
                   for n, v in headers.items()), headers


@BOUNDED
@given(header_names.filter(lambda n: header_problem({n: "x"}) is None), st.integers(0, 40),
       st.one_of(CONTROLS, st.characters(min_codepoint=0x80)))
def test_a_control_or_non_ascii_character_in_a_header_is_refused_before_approval(
    name: str, index: int, char: str
) -> None:
    in_value = {name: with_inserted("value", index, char)}
    for headers in ([in_value] if char != "\t" else []) + [  # a tab is part of a value
            {with_inserted(name, index, char): "value"}]:
        problem = input_problem(HTTP_REQUEST, {"url": "https://api.example.com/",
                                               "headers": headers})
        assert problem is not None and problem.startswith("headers:"), (headers, problem)


@BOUNDED
@given(st.integers(0, 60), CONTROLS)
def test_a_control_character_anywhere_in_an_http_request_url_is_refused_before_approval(
    index: int, char: str
) -> None:
    url = with_inserted("https://api.example.com/v1/items?q=1", index, char)
    problem = input_problem(HTTP_REQUEST, {"url": url})
    assert problem is not None and problem.startswith("url:"), (url, problem)
