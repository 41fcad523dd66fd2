"""``stoat-admin``: the operator's command line over the Stoat HTTP API.

Tables for people, ``--json`` for scripts. Every failure is one line on
stderr and exit code 1 (usage errors: click's exit code 2).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import Any, Callable, Dict, Optional, TypeVar

import click
from rich.console import Console
from rich.table import Table

from . import _protocol as protocol
from . import metrics as metrics_summary
from ._protocol import Backoff
from .client import DEFAULT_URL, Client
from .errors import StoatError
from .types import Delete, Operation, Policy, RangeDelete, TransactionEvent, Write

F = TypeVar("F", bound=Callable[..., Any])

# An operator waits a few seconds at most for a busy or recovering server.
CLI_BACKOFF = Backoff(retries=3, initial_seconds=0.1, max_seconds=1.0)


class Settings:
    def __init__(self, url: str, token: Optional[str], timeout: float, as_json: bool) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.as_json = as_json

    def client(self) -> Client:
        return Client(self.url, token=self.token, timeout=self.timeout, backoff=CLI_BACKOFF)


def json_option(function: F) -> F:
    """``--json`` accepted after the command too (``stoat-admin version --json``)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(function)


def command(function: F) -> F:
    """Runs a command with its client; turns any StoatError into one line and exit 1."""

    @functools.wraps(function)
    def wrapper(*args: Any, as_json: bool = False, **kwargs: Any) -> Any:
        settings = click.get_current_context().find_object(Settings)
        assert settings is not None, "the stoat-admin group sets the settings"
        settings.as_json = settings.as_json or as_json
        try:
            with settings.client() as client:
                return function(settings, client, *args, **kwargs)
        except StoatError as error:
            raise click.ClickException(one_line(error.message)) from None

    return json_option(wrapper)  # type: ignore[return-value]


def one_line(text: str) -> str:
    return " ".join(text.split())


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, sort_keys=False))


def print_table(title: Optional[str], columns: Dict[str, str], rows: Any) -> None:
    table = Table(title=title)
    for name, justify in columns.items():
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    Console().print(table)


@click.group()
@click.option(
    "--url", envvar="STOAT_URL", default=DEFAULT_URL, show_default=True, help="Server URL (env STOAT_URL)."
)
@click.option("--token", envvar="STOAT_TOKEN", default=None, help="Bearer token (env STOAT_TOKEN).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for an answer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.version_option(package_name="stoat", prog_name="stoat-admin")
@click.pass_context
def cli(context: click.Context, url: str, token: Optional[str], timeout: float, as_json: bool) -> None:
    """Administer a Stoat server: versions, commit status, retention, live tail, metrics."""
    context.obj = Settings(url, token, timeout, as_json)


@cli.command()
@command
def version(settings: Settings, client: Client) -> None:
    """The newest acknowledged version and the leader's id."""
    result = client.version()
    if settings.as_json:
        emit_json({"version": result.version, "leader_id": result.leader_id})
    else:
        print_table(None, {"version": "right", "leader_id": "left"}, [(result.version, result.leader_id)])


@cli.command()
@click.argument("request_id")
@click.option("--min-version", type=int, default=None, help="Oldest version to look from.")
@command
def status(settings: Settings, client: Client, request_id: str, min_version: Optional[int]) -> None:
    """Whether the commit with REQUEST_ID was applied."""
    result = client.status(request_id, min_version)
    if settings.as_json:
        emit_json({"request_id": result.request_id, "status": result.status, "version": result.version})
    else:
        columns = {"request_id": "left", "status": "left", "version": "right"}
        print_table(None, columns, [(result.request_id, result.status, result.version)])


@cli.group()
def retention() -> None:
    """Retention policies: each pins the log from its version on."""


def policy_json(policy: Policy) -> Dict[str, Any]:
    return {"policy_id": policy.policy_id, "version": policy.version, "updated_at": policy.updated_at}


def show_policies(settings: Settings, policies: Any, title: Optional[str] = None) -> None:
    columns = {"policy_id": "left", "version": "right", "updated_at": "left"}
    print_table(title, columns, [(p.policy_id, p.version, p.updated_at) for p in policies])


@retention.command("list")
@command
def retention_list(settings: Settings, client: Client) -> None:
    """Every policy and the oldest version still retained."""
    result = client.retention.list()
    if settings.as_json:
        emit_json({"policies": [policy_json(p) for p in result.policies], "oldest_version": result.oldest_version})
    else:
        show_policies(settings, result.policies, title=f"oldest retained version: {result.oldest_version}")


@retention.command("get")
@click.argument("policy_id")
@command
def retention_get(settings: Settings, client: Client, policy_id: str) -> None:
    """One policy."""
    policy = client.retention.get(policy_id)
    if settings.as_json:
        emit_json(policy_json(policy))
    else:
        show_policies(settings, [policy])


@retention.command("set")
@click.argument("policy_id")
@click.argument("version", type=click.IntRange(min=0))
@command
def retention_set(settings: Settings, client: Client, policy_id: str, version: int) -> None:
    """Create POLICY_ID or move it to VERSION."""
    policy = client.retention.put(policy_id, version)
    if settings.as_json:
        emit_json(policy_json(policy))
    else:
        show_policies(settings, [policy])


@retention.command("delete")
@click.argument("policy_id")
@command
def retention_delete(settings: Settings, client: Client, policy_id: str) -> None:
    """Delete a policy."""
    client.retention.delete(policy_id)
    if settings.as_json:
        emit_json({"policy_id": policy_id, "deleted": True})
    else:
        click.echo(f"deleted retention policy {policy_id}")


def show_bytes(data: bytes) -> str:
    """Text when the bytes are printable UTF-8, else Python's bytes notation."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data)
    return text if text.isprintable() else repr(data)


def operation_json(operation: Operation) -> Dict[str, str]:
    if isinstance(operation, Write):
        return {"type": "write", "key": protocol.b64(operation.key), "value": protocol.b64(operation.value)}
    if isinstance(operation, Delete):
        return {"type": "delete", "key": protocol.b64(operation.key)}
    return {"type": "range_delete", "begin": protocol.b64(operation.begin), "end": protocol.b64(operation.end)}


def operation_line(operation: Operation) -> str:
    if isinstance(operation, Write):
        return f"  write  {show_bytes(operation.key)} = {show_bytes(operation.value)}"
    if isinstance(operation, Delete):
        return f"  delete {show_bytes(operation.key)}"
    assert isinstance(operation, RangeDelete)
    return f"  range_delete [{show_bytes(operation.begin)}, {show_bytes(operation.end)})"


def transaction_json(event: TransactionEvent) -> Dict[str, Any]:
    return {
        "version": event.version,
        "prev_version": event.prev_version,
        "request_id": event.request_id,
        "leader_id": event.leader_id,
        "timestamp": event.timestamp,
        "operations": [operation_json(op) for op in event.operations],
    }


@cli.command()
@click.option("--after", type=click.IntRange(min=0), default=None, help="Start after this version (default: now).")
@click.option("--durable/--no-durable", default=True, show_default=True, help="Only durable transactions.")
@click.option("--prefix", default=None, help="Only operations on keys starting with this text.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many transactions.")
@command
def tail(
    settings: Settings, client: Client, after: Optional[int], durable: bool, prefix: Optional[str], count: Optional[int]
) -> None:
    """Print transactions as they are committed, with decoded keys."""
    prefix_bytes = prefix.encode("utf-8") if prefix is not None else None
    seen = 0
    try:
        for event in client.subscribe(after=after, durable=durable, prefix=prefix_bytes, max_reconnects=10):
            assert isinstance(event, TransactionEvent)
            if settings.as_json:
                emit_json(transaction_json(event))
            else:
                click.echo(f"{event.version}  {event.timestamp}  request {event.request_id}")
                for operation in event.operations:
                    click.echo(operation_line(operation))
            sys.stdout.flush()
            seen += 1
            if count is not None and seen >= count:
                return
    except KeyboardInterrupt:
        return


@cli.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds between the two scrapes that give rates (0: one scrape, no rate).",
)
@command
def metrics(settings: Settings, client: Client, interval: float) -> None:
    """A readable summary of /metrics: commit rate, latency percentiles, subscribers."""
    earlier = None
    if interval > 0:
        earlier = metrics_summary.parse(client.metrics_text())
        started = time.monotonic()
        time.sleep(interval)
        interval = time.monotonic() - started
    later = metrics_summary.parse(client.metrics_text())
    # The oldest retained version comes from /v1/retention/, asked once: the
    # summary shows "n/a" rather than wait when it is not answered.
    oldest: Optional[int] = None
    with Client(settings.url, token=settings.token, timeout=settings.timeout, backoff=Backoff(retries=0)) as once:
        try:
            oldest = once.retention.list().oldest_version
        except StoatError:
            oldest = None
    summary = metrics_summary.summarize(later, earlier, interval, oldest)
    if settings.as_json:
        emit_json(summary.as_json())
        return
    rows = [
        ("commits", ", ".join(f"{k} {v:g}" for k, v in sorted(summary.commits_by_outcome.items())) or "none"),
        ("commit rate", "n/a" if summary.commit_rate_per_second is None else f"{summary.commit_rate_per_second:.1f}/s"),
    ]
    for name, seconds in summary.commit_latency_seconds.items():
        shown = "n/a" if seconds is None else f"{seconds * 1000:.2f} ms"
        rows.append((f"commit latency {name} ({summary.latency_window})", shown))
    rows += [
        ("transactions per batch (mean)", optional(summary.batch_transactions_mean, "{:.1f}")),
        ("open connections", optional(summary.connections_open, "{:g}")),
        ("pipeline queue depth", optional(summary.queue_depth, "{:g}")),
        ("subscribers", optional(summary.subscribers, "{:g}")),
        ("oldest retained version", optional(summary.oldest_version, "{}")),
    ]
    print_table(f"stoat at {settings.url}", {"metric": "left", "value": "right"}, rows)


def optional(value: Optional[float], pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def main() -> None:
    cli(prog_name="stoat-admin")


if __name__ == "__main__":
    main()
