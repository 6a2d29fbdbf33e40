"""Client for the Driver2 HTTP API: keyset-paged invoice reads and single look-ups, transient
failures retried under one bounded `RetryPolicy`, errors whose messages never carry the token.

Retries, time-outs and the page size have their defaults here (`RetryPolicy`, `Driver2Client`)
and are tuned per deployment in the `driver2_api` connection's extra, nowhere else:

    {"max_attempts": 6, "max_total_seconds": 120, "backoff_first_seconds": 1,
     "backoff_max_seconds": 30, "jitter": 0.5, "connect_timeout_seconds": 5,
     "read_timeout_seconds": 60, "page_size": 500}

Every key is optional; `read_connection_settings` checks them.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import requests

from driver2_sync.settings import DRIVER2_CONN_ID

log = logging.getLogger(__name__)

INVOICES_PATH = "/api/v1/invoices"
CUSTOMERS_PATH = "/api/v1/customers"
MAX_PAGE_SIZE = 500
# (connect, read) seconds: every request has both, however it is configured.
DEFAULT_TIMEOUT = (5.0, 60.0)

DOCUMENT_NUMBER_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9-]{0,31}")
CUSTOMER_NO_PATTERN = re.compile(r"[A-Za-z0-9-]{1,20}")

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
AUTH_STATUSES = frozenset({401, 403})

# ChunkedEncodingError is how requests reports a connection dropped halfway through a body;
# it is not a ConnectionError, yet it is the same failure seen a little later. SSLError is a
# ConnectionError too, but a certificate that fails verification fails again: it is final.
TRANSIENT_EXCEPTIONS = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)

REDACTED = "***"
SECRET_PATTERNS = (
    # A closing bracket ends a token too: "(... wrong bearer token.)" keeps its ")".
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\",;)\]}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/@\s'\"]+@"), r"\1" + REDACTED + "@"),
    (
        re.compile(
            r"(?i)([?&;](?:access_)?(?:token|api_key|apikey|key|password|secret)=)[^&\s'\"]+"
        ),
        r"\1" + REDACTED,
    ),
    (
        re.compile(r"""(?i)(["']?\b(?:password|token|secret)["']?\s*[:=]\s*["']?)[^"'\s,&}]+"""),
        r"\1" + REDACTED,
    ),
)


class Driver2Error(Exception):
    """Anything that stops a Driver2 call; the message never carries a secret."""


class Driver2ConfigError(Driver2Error):
    """The Airflow connection for Driver2 is missing or incomplete."""


class Driver2AuthError(Driver2Error):
    """Driver2 refused the token (401 or 403); retrying cannot help."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class Driver2RequestError(Driver2Error):
    """Driver2 rejected the request for good (a 4xx other than 401/403/429, or another status)."""

    def __init__(self, message: str, *, status: int, error: str | None, detail: str | None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.detail = detail


class Driver2UnavailableError(Driver2Error):
    """Transient failures went on until the retry policy's attempts or time ran out."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        elapsed_seconds: float,
        last_cause: str,
        path: str | None = None,
    ):
        super().__init__(message)
        self.attempts = attempts
        self.elapsed_seconds = elapsed_seconds
        self.last_cause = last_cause
        self.path = path


class Driver2ProtocolError(Driver2Error):
    """Driver2 answered, but not as driver2-api.yaml says it must (bad page, looping cursor)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: the one place this is configured.

    A retry is made only while both bounds hold: at most `max_attempts` requests in all, and
    the wait before the next one ends within `max_total_seconds` of the first. Waits grow
    exponentially from `backoff_first_seconds` up to `backoff_max_seconds`, less a random
    share of up to `jitter` of each, unless the server names its own delay in `Retry-After`.
    """

    max_attempts: int = 6
    max_total_seconds: float = 120.0
    backoff_first_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_total_seconds <= 0:
            raise ValueError("max_total_seconds must be positive")
        if not 0 <= self.backoff_first_seconds <= self.backoff_max_seconds:
            raise ValueError("need 0 <= backoff_first_seconds <= backoff_max_seconds")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def compute_backoff(self, retry_number: int) -> float:
        """Return the wait in seconds before retry `retry_number` (1 for the first retry)."""
        ceiling = min(
            self.backoff_max_seconds, self.backoff_first_seconds * 2 ** (retry_number - 1)
        )
        return ceiling * (1 - self.jitter * random.random())


@dataclass(frozen=True)
class InvoicePage:
    """One page of the invoice listing: raw documents, unvalidated, and the cursor after it."""

    items: list[dict] = field(repr=False)
    next_cursor: str | None


class _TransientFailure(Exception):
    """One failed attempt that the retry loop may repeat."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


def scrub_secrets(text: object, secrets: Iterable[str | None] = ()) -> str:
    """Return `text` as a string with the given secrets, bearer tokens and URL credentials masked.

    Use it on anything that may reach a log line or an exception message: server error
    bodies, exception texts from requests or Airflow, URLs.
    """
    scrubbed = str(text)

    # Every occurrence goes, however short the secret: a garbled message beats a leaked one.
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            scrubbed = scrubbed.replace(form, REDACTED)

    for pattern, replacement in SECRET_PATTERNS:
        scrubbed = pattern.sub(replacement, scrubbed)
    return scrubbed


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Return the delay in seconds that a `Retry-After` header asks for, or None if unusable.

    Both forms are understood: whole seconds ("120") and an HTTP date. A date in the past
    gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)

    delay = (moment - (now or datetime.now(UTC))).total_seconds()
    # An HTTP date has whole-second resolution; rounding up keeps us from asking too early.
    return float(max(0, math.ceil(delay)))


def format_rfc3339(moment: datetime) -> str:
    """Return `moment` in RFC 3339 with its offset; a naive datetime is refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("updated_since must be timezone-aware (RFC 3339 needs an offset)")
    return moment.isoformat()


def decode_json(body: bytes | str) -> Any:
    """Return the JSON document in `body`, with every number that has a fraction as Decimal.

    NaN, Infinity and integers too long for Python's int() come back as Decimal too, so that one
    such value makes its own invoice `invalid` instead of failing the page it is on.
    Raises ValueError when the body is not one complete JSON document.
    """
    return json.loads(body, parse_float=Decimal, parse_int=_json_int, parse_constant=Decimal)


# int() refuses longer digit strings (sys.get_int_max_str_digits() is 4300 by default).
_MAX_INT_DIGITS = 4000


def _json_int(digits: str) -> int | Decimal:
    return int(digits) if len(digits) <= _MAX_INT_DIGITS else Decimal(digits)


def _read_error_body(response: requests.Response) -> tuple[str | None, str | None]:
    try:
        body = decode_json(response.content)
    except ValueError:
        text = response.text.strip()
        return None, text[:200] or None
    if not isinstance(body, dict):
        return None, None
    error, message = body.get("error"), body.get("message")
    return (
        error if isinstance(error, str) else None,
        message if isinstance(message, str) else None,
    )


def _read_page(body: Any) -> InvoicePage:
    if not isinstance(body, dict):
        _raise_protocol_error(f"invoice page is a JSON {type(body).__name__}, not an object")
    if not isinstance(body.get("items"), list):
        _raise_protocol_error("invoice page has no 'items' list")
    if "next_cursor" not in body:
        _raise_protocol_error("invoice page has no 'next_cursor' key")

    cursor = body["next_cursor"]
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        _raise_protocol_error("invoice page has a 'next_cursor' that is not a string or null")
    return InvoicePage(items=body["items"], next_cursor=cursor)


def _raise_protocol_error(message: str) -> NoReturn:
    log.error("%s", message)
    raise Driver2ProtocolError(message)


class _BearerAuth(requests.auth.AuthBase):
    """Bearer token auth; as session auth it also keeps ~/.netrc from replacing the header."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class Driver2Client:
    """Read invoices and customers from the Driver2 API over one `requests.Session`.

    Not thread-safe: give each thread its own client. Use it as a context manager, or call
    `close()`, to release the session's connections.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry_policy: RetryPolicy = RetryPolicy(),
        page_size: int = MAX_PAGE_SIZE,
        conn_id: str | None = None,
    ) -> None:
        """Set up a client for `base_url` ("https://host:port") that sends `token`.

        `timeout` is (connect, read) in seconds for every request. `page_size` is the number
        of invoices asked for per page when a caller names none. `conn_id` only names the
        Airflow connection in error messages.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an absolute http or https URL")
        if not token:
            raise ValueError("token must not be empty")
        if len(timeout) != 2 or min(timeout) <= 0:
            raise ValueError("timeout must be (connect, read) seconds, both positive")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")

        self.base_url = base_url.rstrip("/")
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.retry_policy = retry_policy
        self.page_size = page_size
        self.conn_id = conn_id
        self._token = token
        self._session = requests.Session()
        self._session.auth = _BearerAuth(token)
        self._session.headers.update(
            {"Accept": "application/json", "User-Agent": "driver2-planmanager-sync"}
        )

    @classmethod
    def from_connection(cls, conn_id: str = DRIVER2_CONN_ID, **kwargs: Any) -> Driver2Client:
        """Return a client configured from Airflow connection `conn_id`, read now.

        The connection gives `schema` (http or https, https when empty), `host`, `port`, the
        token as its password, and in its extra the retry, time-out and page-size settings of
        `read_connection_settings`. Keyword arguments go to the constructor and take the place
        of the extra's.

        Raises Driver2ConfigError when the connection is missing, incomplete or has a bad
        setting.
        """
        # Imported here: airflow.sdk is slow to import and only this constructor needs it.
        from airflow.sdk import BaseHook

        try:
            conn = BaseHook.get_connection(conn_id)
        except Exception as exc:
            message = f"cannot read Airflow connection {conn_id!r}: {scrub_secrets(exc)}"
            log.error("%s", message)
            # Not chained: the original exception may quote the connection with its password.
            raise Driver2ConfigError(message) from None

        token = conn.password
        if not token:
            message = (
                f"Airflow connection {conn_id!r} has no password; set it to the Driver2 API token"
            )
            log.error("%s", message)
            raise Driver2ConfigError(message)

        base_url = _build_base_url(conn_id, conn.schema, conn.host, conn.port, secrets=[token])
        settings = read_connection_settings(conn_id, _read_extra(conn_id, conn, token))
        return cls(base_url, token, conn_id=conn_id, **{**settings, **kwargs})

    def __enter__(self) -> Driver2Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Driver2Client({self.base_url!r})"

    def close(self) -> None:
        """Close the HTTP session and its pooled connections."""
        self._session.close()

    def iter_invoice_pages(
        self, updated_since: datetime | None = None, page_size: int | None = None
    ) -> Iterator[InvoicePage]:
        """Return an iterator over every page of invoices changed at or after `updated_since`.

        Items come in (updated_at, number) order, raw and unvalidated. An invoice changed while
        paging moves to the end and may come twice; the greatest updated_at is current. A page
        may be empty before the last one. Pages are fetched as the iterator is consumed.
        `page_size` None means the client's own.

        Raises ValueError at once for a page_size outside 1..500 or a naive `updated_since`.
        While iterating, raises Driver2ProtocolError on a malformed page or a cursor the server
        already gave, and the other `Driver2Error`s of single requests.
        """
        if page_size is None:
            page_size = self.page_size
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        params: dict[str, Any] = {"limit": page_size}
        if updated_since is not None:
            params["updated_since"] = format_rfc3339(updated_since)
        # Checked above, outside the generator, so that bad arguments fail at the call.
        return self._walk_pages(params, page_size)

    def iter_changed_invoices(
        self, updated_since: datetime | None = None, page_size: int | None = None
    ) -> Iterator[dict]:
        """Return an iterator over the invoices of `iter_invoice_pages`, duplicates included."""
        pages = self.iter_invoice_pages(updated_since, page_size)
        return (item for page in pages for item in page.items)

    def _walk_pages(self, params: dict[str, Any], page_size: int) -> Iterator[InvoicePage]:
        # Shortcoming: only a cursor given twice counts as a loop; a server inventing new
        # cursors forever would keep this going, as would an endless stream of real changes.
        seen_cursors: set[str] = set()
        started = time.monotonic()
        pages = items = 0
        while True:
            page = _read_page(self._get_json(INVOICES_PATH, params))
            pages += 1
            items += len(page.items)

            rate = items / max(time.monotonic() - started, 1e-6)
            log.info(
                "Driver2 invoices page %d: %d items, %d so far (%.0f items/s)",
                pages,
                len(page.items),
                items,
                rate,
            )

            cursor = page.next_cursor
            if cursor is not None and cursor in seen_cursors:
                _raise_protocol_error(
                    f"Driver2 returned cursor {cursor!r} a second time after {pages} pages; "
                    "the listing would loop"
                )
            yield page

            if cursor is None:
                return
            seen_cursors.add(cursor)
            params = {"cursor": cursor, "limit": page_size}

    def get_invoice(self, number: str) -> dict | None:
        """Return the raw invoice or credit note `number`, or None when Driver2 has none.

        Raises ValueError, before any request, when `number` is not a Driver2 document number.
        """
        if not isinstance(number, str) or not DOCUMENT_NUMBER_PATTERN.fullmatch(number):
            raise ValueError(f"not a Driver2 document number: {number!r}")
        return self._get_document(f"{INVOICES_PATH}/{quote(number, safe='')}")

    def get_customer(self, customer_no: str) -> dict | None:
        """Return the Driver2 customer `customer_no` as it is now, or None when unknown.

        Raises ValueError, before any request, when `customer_no` is not a customer number.
        """
        if not isinstance(customer_no, str) or not CUSTOMER_NO_PATTERN.fullmatch(customer_no):
            raise ValueError(f"not a Driver2 customer number: {customer_no!r}")
        return self._get_document(f"{CUSTOMERS_PATH}/{quote(customer_no, safe='')}")

    def _get_document(self, path: str) -> dict | None:
        body = self._get_json(path, None, missing_ok=True)
        if body is None or isinstance(body, dict):
            return body
        _raise_protocol_error(
            f"Driver2 answered GET {path} with a JSON {type(body).__name__}, not an object"
        )

    def _get_json(
        self, path: str, params: Mapping[str, Any] | None, *, missing_ok: bool = False
    ) -> Any:
        """Return the decoded body of GET `path`, retrying transient failures per the policy.

        Returns None for a 404 when `missing_ok`.
        """
        policy = self.retry_policy
        started = time.monotonic()
        deadline = started + policy.max_total_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt_get(path, params, missing_ok, deadline)
            except _TransientFailure as failure:
                cause, retry_after = failure.cause, failure.retry_after

            elapsed = time.monotonic() - started
            wait = retry_after if retry_after is not None else policy.compute_backoff(attempt)
            if attempt >= policy.max_attempts:
                break
            if elapsed + wait >= policy.max_total_seconds:
                cause = f"{cause}; waiting {wait:.1f} s more would pass the time budget"
                break

            log.warning(
                "Driver2 GET %s failed (%s) on attempt %d of %d; retrying in %.2f s",
                path,
                cause,
                attempt,
                policy.max_attempts,
                wait,
            )
            time.sleep(wait)

        elapsed = time.monotonic() - started
        message = (
            f"Driver2 at {self.base_url} did not answer GET {path} after {attempt} attempts "
            f"over {elapsed:.1f} s; last cause: {cause}"
        )
        message = scrub_secrets(message, [self._token])
        log.error("%s", message)
        raise Driver2UnavailableError(
            message, attempts=attempt, elapsed_seconds=elapsed, last_cause=cause, path=path
        )

    def _attempt_get(
        self, path: str, params: Mapping[str, Any] | None, missing_ok: bool, deadline: float
    ) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _TransientFailure("no time left in the retry budget")
        # Shortcoming: the read time-out bounds each wait for data, not the whole answer, so a
        # server that trickles bytes can hold one attempt past the time budget.
        timeout = (min(self.timeout[0], remaining), min(self.timeout[1], remaining))

        log.debug("Driver2 GET %s params=%s", path, dict(params or {}))
        try:
            response = self._session.get(
                self.base_url + path, params=params, timeout=timeout, allow_redirects=False
            )
        except requests.exceptions.SSLError as exc:
            message = scrub_secrets(
                f"TLS with Driver2 at {self.base_url} failed on GET {path}: {exc}; "
                "verification stays on, so fix the certificate or the trusted CA bundle",
                [self._token],
            )
            log.error("%s", message)
            raise Driver2Error(message) from None
        except TRANSIENT_EXCEPTIONS as exc:
            raise _TransientFailure(
                scrub_secrets(f"{type(exc).__name__}: {exc}", [self._token])
            ) from None
        status = response.status_code
        log.debug("Driver2 GET %s -> %d (%d bytes)", path, status, len(response.content))

        if status in TRANSIENT_STATUSES:
            header = response.headers.get("Retry-After")
            if status not in RETRY_AFTER_STATUSES or header is None:
                raise _TransientFailure(f"HTTP {status}")
            cause = scrub_secrets(f"HTTP {status}, Retry-After: {header}", [self._token])
            raise _TransientFailure(cause, parse_retry_after(header))
        if status == 404 and missing_ok:
            return None
        if status in AUTH_STATUSES:
            self._raise_auth_error(path, response)
        if not 200 <= status < 300:
            self._raise_request_error(path, response)

        try:
            return decode_json(response.content)
        except ValueError:
            raise _TransientFailure(
                f"HTTP {status} with a body that is not complete JSON "
                f"({len(response.content)} bytes)"
            ) from None

    def _raise_auth_error(self, path: str, response: requests.Response) -> NoReturn:
        error, detail = _read_error_body(response)
        where = f"connection {self.conn_id!r} ({self.base_url})" if self.conn_id else self.base_url
        message = scrub_secrets(
            f"Driver2 refused the API token of {where}: HTTP {response.status_code} on GET "
            f"{path} ({error or 'no error code'}: {detail or 'no message'}); "
            "check the token (the connection's password)",
            [self._token],
        )
        log.error("%s", message)
        raise Driver2AuthError(message, status=response.status_code)

    def _raise_request_error(self, path: str, response: requests.Response) -> NoReturn:
        error, detail = _read_error_body(response)
        status = response.status_code
        if 300 <= status < 400:
            # Redirects are not followed: the API has none, and a token should not travel on.
            detail = f"unexpected redirect to {response.headers.get('Location')!r}"
        if error:
            error = scrub_secrets(error, [self._token])
        if detail:
            detail = scrub_secrets(detail, [self._token])
        message = (
            f"Driver2 at {self.base_url} rejected GET {path}: HTTP {status} "
            f"({error or 'no error code'}: {detail or 'no message'})"
        )
        log.error("%s", message)
        raise Driver2RequestError(message, status=status, error=error, detail=detail)


# The connection extra's keys: where each goes and what it must be.
_RETRY_SETTINGS = {
    "max_attempts": int,
    "max_total_seconds": float,
    "backoff_first_seconds": float,
    "backoff_max_seconds": float,
    "jitter": float,
}
_CLIENT_SETTINGS = {
    "connect_timeout_seconds": float,
    "read_timeout_seconds": float,
    "page_size": int,
}


def read_connection_settings(conn_id: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Return the constructor arguments that the connection extra sets: `retry_policy`,
    `timeout` and `page_size`, each only when the extra names one of its keys.

    Keys and defaults: max_attempts (6), max_total_seconds (120), backoff_first_seconds (1),
    backoff_max_seconds (30), jitter (0.5), connect_timeout_seconds (5), read_timeout_seconds
    (60), page_size (500). Numbers may be JSON numbers or numeric strings. Other keys are left
    to whoever set them, with a warning that names them.

    Raises Driver2ConfigError, naming the key, for a value that is not a number or that the
    policy or client would refuse.
    """
    known = _RETRY_SETTINGS | _CLIENT_SETTINGS
    values = {
        key: _read_number(conn_id, key, value, known[key])
        for key, value in extra.items()
        if key in known
    }
    unknown = sorted(key for key in extra if key not in known)
    if unknown:
        log.warning(
            "Airflow connection %r: extra keys %s are not Driver2 client settings; ignored",
            conn_id,
            unknown,
        )

    settings: dict[str, Any] = {}
    retry = {key: values[key] for key in _RETRY_SETTINGS if key in values}
    if retry:
        try:
            settings["retry_policy"] = RetryPolicy(**retry)
        except ValueError as error:
            _raise_setting_error(conn_id, str(error))
    if "connect_timeout_seconds" in values or "read_timeout_seconds" in values:
        timeout = (
            values.get("connect_timeout_seconds", DEFAULT_TIMEOUT[0]),
            values.get("read_timeout_seconds", DEFAULT_TIMEOUT[1]),
        )
        if min(timeout) <= 0:
            _raise_setting_error(conn_id, "time-outs must be positive")
        settings["timeout"] = timeout
    if "page_size" in values:
        if not 1 <= values["page_size"] <= MAX_PAGE_SIZE:
            _raise_setting_error(conn_id, f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        settings["page_size"] = values["page_size"]
    return settings


def _read_number(conn_id: str, key: str, value: Any, kind: type) -> int | float:
    # The value is not echoed: an extra is free text, and a token pasted in the wrong place
    # must not reach the log.
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or (kind is int and number != int(number)):
        _raise_setting_error(conn_id, f"{key} must be {'a whole' if kind is int else 'a'} number")
    return int(number) if kind is int else number


def _raise_setting_error(conn_id: str, problem: str) -> NoReturn:
    message = f"Airflow connection {conn_id!r} has a bad Driver2 setting in its extra: {problem}"
    log.error("%s", message)
    raise Driver2ConfigError(message)


def _read_extra(conn_id: str, conn: Any, token: str) -> Mapping[str, Any]:
    try:
        extra = conn.extra_dejson
    except Exception as exc:
        message = scrub_secrets(f"cannot read the extra of {conn_id!r}: {exc}", [token])
        log.error("%s", message)
        raise Driver2ConfigError(message) from None
    if not isinstance(extra, Mapping):
        _raise_setting_error(conn_id, "the extra must be a JSON object")
    return extra


def _build_base_url(
    conn_id: str, schema: str | None, host: str | None, port: int | None, secrets: list[str]
) -> str:
    scheme = (schema or "https").strip().lower()
    if scheme not in ("http", "https"):
        message = scrub_secrets(
            f"Airflow connection {conn_id!r} has schema {schema!r}; use http or https", secrets
        )
        log.error("%s", message)
        raise Driver2ConfigError(message)

    host = (host or "").strip()
    if not host or "://" in host or "/" in host or "@" in host:
        message = (
            f"Airflow connection {conn_id!r} needs a bare host name in 'host' "
            f"(scheme in 'schema', port in 'port'), got {scrub_secrets(host, secrets)!r}"
        )
        log.error("%s", message)
        raise Driver2ConfigError(message)

    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"
