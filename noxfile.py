"""Developer tasks: `nox -s tests lint typing demo`, and `nox -s bench` for the benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole test suite, on trio and asyncio."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff, with the flake8-async rules."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typing(session: nox.Session) -> None:
    """mypy --strict over src and tests."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site, built strict into a temporary directory."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", f"{session.create_tmp()}/site")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The demo on the built-in mock provider (pass arguments after --)."""
    session.install("-e", ".")
    session.run("python", "-m", "llm_gateway.demo", *session.posargs)


@nox.session(python="3.11")
def soak(session: nox.Session) -> None:
    """10,000 requests with ~30% injected faults over loopback, on trio and asyncio, then 100
    gateways per backend ended abnormally at a random moment (logs on).

    Fails if any request is answered twice or lost, or an abnormal exit leaves a request
    unresolved, resolves one twice or lets out an exception other than the one that ended the
    block (see docs/resilience.md). Pass arguments after --, e.g.
    `nox -s soak -- --requests 2000 --abnormal-exits 20 --backend trio`.
    """
    session.install("-e", ".[all,trio]")
    session.run("python", "benchmarks/soak.py", "--abnormal-exits", "100", *session.posargs)


@nox.session(name="soak-shared", python="3.11")
def soak_shared(session: nox.Session) -> None:
    """Shared rate limits across processes: 4 gateways (2 trio, 2 asyncio), one redis-server,
    rpm=120 and a token limit enforced by the loopback fake server; one process killed midway.

    Fails on any 429, an aggregate rate below 90 % of the limit (also after the kill), or a
    HIGH request that did not go before the others' LOW ones (see docs/ratelimits.md). Needs
    `redis-server` (the test extra brings one). Pass arguments after --, e.g.
    `nox -s soak-shared -- --duration 300`.
    """
    session.install("-e", ".[all,trio,redis,test]")
    session.run("python", "benchmarks/soak_shared.py", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmarks against the raw SDKs, LiteLLM and LangChain; writes docs/benchmarks.md.

    The contenders are installed here, never as the library's dependencies. Pass arguments
    after -- (e.g. `nox -s bench -- --quick`).
    """
    session.install("-e", ".[all,trio,redis,otel]", "-r", "benchmarks/requirements.txt")
    session.run("python", "-m", "benchmarks.run", *session.posargs)
