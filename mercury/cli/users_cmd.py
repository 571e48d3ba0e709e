"""`mercury users` and `mercury tokens`: accounts of the web interface and the REST API
(create the first admin here, then manage users in the API)."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from mercury.cli.common import CONFIG_OPTION, console, err_console, load_or_exit, print_error

users_app = typer.Typer(
    help="Users of the web interface and REST API: add, list, set passwords.",
    no_args_is_help=True,
)
tokens_app = typer.Typer(
    help="API tokens (Bearer) for scripts and monitoring: create, list, revoke.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


def _journal(session: Any, kind: str, message: str, **details: Any) -> None:
    from mercury.cli.index_access import operator_name
    from mercury.web.audit import journal

    journal(session, operator_name(), kind, message, via="cli", **details)


@users_app.command("add")
def add_user(
    name: str = typer.Argument(..., help="User name (letters, digits, _ . @ -)."),
    role: str = typer.Option("viewer", "--role", "-r", help="viewer, operator or admin."),
    config: Path = CONFIG_OPTION,
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
) -> None:
    """Add a user (the password is asked for twice, or read with --password-stdin)."""
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index
    from mercury.store.models import utcnow
    from mercury.web.accounts import AccountError, check_name, check_password, check_role

    cfg = load_or_exit(config)
    try:
        check_name(name)
        check_role(role)
        password = check_password(_read_password(password_stdin))
    except AccountError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    from mercury.web.accounts import create_user

    with open_index(cfg) as engine, Session(engine) as session, session.begin():
        try:
            create_user(session, name, password, role, now=utcnow())
        except AccountError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from exc
        _journal(session, "user.created", f"user {name} ({role}) added", name=name, role=role)
    console.print(Text(f"User {name} added with the {role} role."))


@users_app.command("list")
def list_users(
    config: Path = CONFIG_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every user with their role, whether enabled, and their last login."""
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index
    from mercury.web.accounts import list_users as all_users

    cfg = load_or_exit(config)
    with open_index(cfg) as engine, Session(engine) as session:
        users: list[dict[str, Any]] = [
            {
                "name": u.name,
                "role": u.role,
                "enabled": u.enabled,
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            for u in all_users(session)
        ]
    if as_json:
        typer.echo(json.dumps(users, indent=2))
        return
    if not users:
        console.print(
            "No users yet: add the first admin with `mercury users add NAME --role admin`."
        )
        return
    table = Table("User", "Role", "Enabled", "Last login")
    for user in users:
        last = user["last_login_at"]
        table.add_row(
            Text(user["name"]),
            user["role"],
            "yes" if user["enabled"] else "no",
            last[:19].replace("T", " ") if last else "never",
        )
    console.print(table)


@users_app.command("passwd")
def set_password(
    name: str = typer.Argument(..., help="User name."),
    config: Path = CONFIG_OPTION,
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
) -> None:
    """Set a user's password (their web sessions end)."""
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index
    from mercury.store.models import utcnow
    from mercury.web.accounts import AccountError, check_password, update_user

    cfg = load_or_exit(config)
    try:
        password = check_password(_read_password(password_stdin))
    except AccountError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    with open_index(cfg) as engine, Session(engine) as session, session.begin():
        try:
            update_user(session, name, now=utcnow(), password=password)
        except AccountError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from exc
        _journal(
            session,
            "user.updated",
            f"password of {name} set",
            name=name,
            changes={"password": True},
        )
    console.print(Text(f"Password of {name} set."))


@tokens_app.command("create")
def create_token(
    user: str = typer.Option(..., "--user", "-u", help="Whose token: it acts with their role."),
    config: Path = CONFIG_OPTION,
    description: str = typer.Option("", "--description", "-d", help="What it is for."),
    expires_days: int | None = typer.Option(
        None, "--expires-days", min=1, max=3650, help="Expire after this many days."
    ),
) -> None:
    """Create an API token and print it once (only its hash is kept)."""
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index, operator_name
    from mercury.store.models import utcnow
    from mercury.web.accounts import AccountError
    from mercury.web.accounts import create_token as new_token

    cfg = load_or_exit(config)
    now = utcnow()
    expires = now + timedelta(days=expires_days) if expires_days else None
    with open_index(cfg) as engine, Session(engine) as session, session.begin():
        try:
            created = new_token(
                session,
                user,
                now=now,
                created_by=operator_name(),
                description=description[:200],
                expires_at=expires,
            )
        except AccountError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from exc
        token_id = created.row.id
        _journal(
            session,
            "token.created",
            f"API token {token_id} created for {user}",
            token=token_id,
            owner=user,
        )
    typer.echo(created.token)
    err_console.print(
        Text(
            f"Token {token_id} for {user}: send it as 'Authorization: Bearer TOKEN'. "
            "It is not shown again.",
            style="dim",
        ),
        highlight=False,
    )


@tokens_app.command("list")
def list_tokens(
    config: Path = CONFIG_OPTION,
    user: str | None = typer.Option(None, "--user", "-u", help="Only this user's tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """API tokens (never the tokens themselves): id, user, description, use, revocation."""
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index
    from mercury.web.accounts import list_tokens as all_tokens

    cfg = load_or_exit(config)
    with open_index(cfg) as engine, Session(engine) as session:
        tokens: list[dict[str, Any]] = [
            {
                "id": t.id,
                "user": t.user_name,
                "description": t.description,
                "created_at": t.created_at.isoformat(),
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                "revoked": t.revoked_at is not None,
            }
            for t in all_tokens(session, user)
        ]
    if as_json:
        typer.echo(json.dumps(tokens, indent=2))
        return
    table = Table("Id", "User", "Description", "Last used", "State")
    for token in tokens:
        last = token["last_used_at"]
        table.add_row(
            token["id"],
            Text(token["user"]),
            Text(token["description"]),
            last[:19].replace("T", " ") if last else "never",
            "revoked" if token["revoked"] else "active",
        )
    console.print(table)


@tokens_app.command("revoke")
def revoke(
    token_id: str = typer.Argument(..., help="Token id (from `mercury tokens list`)."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Revoke an API token at once."""
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index
    from mercury.store.models import utcnow
    from mercury.web.accounts import revoke_token

    cfg = load_or_exit(config)
    with open_index(cfg) as engine, Session(engine) as session, session.begin():
        try:
            changed = revoke_token(session, token_id, now=utcnow())
        except LookupError as exc:
            print_error(f"no API token {token_id!r}; see `mercury tokens list`")
            raise typer.Exit(2) from exc
        if changed:
            _journal(session, "token.revoked", f"API token {token_id} revoked", token=token_id)
    console.print(Text(f"Token {token_id} {'revoked' if changed else 'was already revoked'}."))
