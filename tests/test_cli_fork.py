"""`loopllama runs fork` and `loopllama runs compare` as real subprocesses, against the
API under uvicorn and the test's worker (the fixtures and helpers of
tests/test_cli_client.py), on crews of the offline model: its answer names the agent's
instructions, so an edit shows in the output, deterministically.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import tests.test_cli_client as cli_client
from tests.test_cli_client import FAST, OFFLINE, STEP_LINE, Server, offline

# The fixture of tests/test_cli_client.py: the app under uvicorn, the CLI pointed at it.
server = cli_client.server

RUN_ID = r"ckrun\w+"


async def finished_run(server: Server, workflow_id: str, text: str) -> dict[str, Any]:
    return await server.until(await server.trigger(workflow_id, text), "completed")


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["role"]: step for step in run["steps"]}


async def test_fork_with_edits_prints_the_new_run_and_waits(
    server: Server, worker: Any, tmp_path: Path
) -> None:
    workflow_id = await server.create("three", offline("planner", "writer", "editor"))
    source = await finished_run(server, workflow_id, "Draft a brief.")
    instructions = tmp_path / "writer.txt"
    instructions.write_text("You are a terse writer.\nWrite short sentences.\n")

    started = await server.cli("runs", "fork", source["id"], "--from", "writer",
                               "--instructions", f"writer=@{instructions}")
    assert started.code == 0, started
    match = re.fullmatch(rf"({RUN_ID})  queued\n", started.out)
    assert match and match.group(1) != source["id"], started
    fork = await server.until(match.group(1), "completed")
    assert fork["forked_from"] == {"run_id": source["id"],
                                   "step_id": steps_of(source)["writer"]["id"]}
    planner, writer, editor = fork["steps"]
    assert planner["reused_from"] == steps_of(source)["planner"]["id"]
    assert planner["output"] == steps_of(source)["planner"]["output"]
    assert "reused_from" not in writer and "reused_from" not in editor
    assert "You are a terse writer." in writer["output"]
    assert "You are a terse writer." not in steps_of(source)["writer"]["output"]

    # --wait: the id at once, then the ended run as `runs get` prints it.
    waited = await server.cli(
        "runs", "fork", source["id"], "--from", "editor", "--output", "writer=By hand.",
        "--model", f"editor={OFFLINE}", "--max-tokens", "editor=300", "--wait",
        "--interval", FAST)
    assert waited.code == 0, waited
    lines = waited.out.splitlines()
    first = re.fullmatch(rf"({RUN_ID})  queued", lines[0])
    assert first, waited
    edited = await server.run(first.group(1))
    assert edited["status"] == "completed"
    assert lines[1] == (f"{edited['id']}  completed  {edited['tokens_in']}→"
                        f"{edited['tokens_out']} tokens"), waited
    assert lines[2].startswith(f"  fork of {source['id']} at step "), waited
    line = "  " + STEP_LINE
    assert re.fullmatch(line.format(n=1, role="planner", model=OFFLINE) + "  reused",
                        lines[3]), waited
    assert re.fullmatch(r"  ✓ 2\. writer  loopllama-offline  0→0 tokens.*  edited",
                        lines[4]), waited
    assert re.fullmatch(line.format(n=3, role="editor", model=OFFLINE), lines[5]), waited
    assert waited.out.endswith(f"\n\n{edited['output']}\n"), waited
    assert "By hand." in steps_of(edited)["editor"]["input"]
    # Its totals count only the editor's call.
    editor_step = steps_of(edited)["editor"]
    assert (edited["tokens_in"], edited["tokens_out"]) == (
        editor_step["tokens_in"], editor_step["tokens_out"])

    # --json: the queued run; `runs get` and `runs list` say it is a fork.
    as_json = await server.cli("runs", "fork", source["id"], "--from", "planner",
                               "--input", "Another brief.", "--json")
    assert as_json.code == 0, as_json
    queued = json.loads(as_json.out)
    assert queued["status"] == "queued" and queued["input"] == "Another brief."
    assert queued["forked_from"]["run_id"] == source["id"]
    await server.until(queued["id"], "completed")
    listed = await server.cli("runs", "list", workflow_id)
    assert listed.code == 0, listed
    fork_lines = [line for line in listed.out.splitlines() if "fork of" in line]
    assert len(fork_lines) == 3 and all(
        line.endswith(f"  fork of {source['id']}") for line in fork_lines), listed


async def test_fork_errors_and_usage(server: Server, worker: Any, tmp_path: Path) -> None:
    workflow_id = await server.create("asks", offline("assistant"),
                                      {"allow_input_requests": True})
    paused = await server.trigger(workflow_id, "ask me about tone")
    await server.until(paused, "waiting_input")
    busy = await server.cli("runs", "fork", paused, "--from", "assistant")
    assert busy.code == 1 and busy.out == "", busy
    assert "only a run that has ended" in busy.err and "HTTP 409" in busy.err, busy

    done = await finished_run(server, workflow_id, "Write it.")
    nobody = await server.cli("runs", "fork", done["id"], "--from", "nobody")
    assert nobody.code == 1 and "no agent with role 'nobody'" in nobody.err, nobody
    assert "HTTP 400" in nobody.err, nobody
    unknown = await server.cli("runs", "fork", done["id"], "--from", "assistant",
                               "--model", "assistant=gpt-4o")
    assert unknown.code == 1 and "gpt-4o" in unknown.err, unknown
    missing = await server.cli("runs", "fork", "ckrun000000000000000000000",
                               "--from", "x")
    assert missing.code == 1 and "HTTP 404" in missing.err, missing

    for args, says in (
        ((), "RUN_ID, or --workflow"),
        ((done["id"], "--workflow", workflow_id, "--last", "1"), "not both"),
        (("--workflow", workflow_id), "--workflow goes with --last"),
        ((done["id"], "--last", "2"), "--last goes with --workflow"),
        ((done["id"], "--model", "assistant"), "ROLE=VALUE"),
        ((done["id"], "--model", "=x"), "ROLE=VALUE"),
        ((done["id"], "--max-tokens", "assistant=lots"), "--max-tokens"),
        ((done["id"], "--instructions", "a=1", "--instructions", "a=2"), "twice"),
        ((done["id"], "--output", f"assistant=@{tmp_path / 'nope.txt'}"), "cannot read"),
        (("--workflow", workflow_id, "--last", "0"), "--last"),
        ((done["id"], "--tools", "sometimes"), "--tools"),
    ):
        usage = await server.cli("runs", "fork", *args, "--from", "assistant")
        assert usage.code == 2 and says in usage.err, (args, usage)
    # Nothing was forked by any of those.
    assert not any("forked_from" in run for run in await server.runs(workflow_id))


async def test_compare_a_run_and_its_fork(server: Server, worker: Any) -> None:
    workflow_id = await server.create("three", offline("planner", "writer", "editor"))
    source = await finished_run(server, workflow_id, "Draft a brief.")
    started = await server.cli("runs", "fork", source["id"], "--from", "writer",
                               "--instructions", "writer=You are a terse writer.", "--json")
    assert started.code == 0, started
    fork = await server.until(json.loads(started.out)["id"], "completed")

    compared = await server.cli("runs", "compare", source["id"], fork["id"])
    assert compared.code == 0, compared
    out = compared.out
    lines = out.splitlines()
    assert re.fullmatch(rf"A  {source['id']}  completed +\d+→\d+ tokens  \d+\.\ds", lines[0])
    assert re.fullmatch(rf"B  {fork['id']}  completed +\d+→\d+ tokens  \d+\.\ds", lines[1])
    assert lines[2] == "B is a fork of A from writer", compared
    a, b = steps_of(source), steps_of(fork)
    planner = out.split("\n1. planner", 1)[1].split("\n2. ", 1)[0]
    assert planner.startswith("  reused from A\n   same output\n"), compared
    tokens = f"{a['planner']['tokens_in']}→{a['planner']['tokens_out']}"
    assert re.search(rf"   tokens    A {tokens} +B {tokens}  \(copied; not counted", planner)
    assert re.search(r"   duration  A \d+\.\ds +B \d+\.\ds", planner), compared
    writer = out.split("\n2. writer", 1)[1].split("\n3. ", 1)[0]
    assert writer.startswith("  ran again\n   --- A/writer\n   +++ B/writer\n   @@ "), compared
    assert f"   -[{OFFLINE}] You are the writer." in writer, compared
    assert f"   +[{OFFLINE}] You are a terse writer." in writer, compared
    w_a = f"{a['writer']['tokens_in']}→{a['writer']['tokens_out']}"
    w_b = f"{b['writer']['tokens_in']}→{b['writer']['tokens_out']}"
    assert re.search(rf"   tokens    A {w_a} +B {w_b}\n", writer), compared
    assert "\n3. editor  ran again\n" in out, compared
    total = out.split("\ntotal\n", 1)[1]
    assert re.match(rf"   tokens    A {source['tokens_in']}→{source['tokens_out']} +"
                    rf"B {fork['tokens_in']}→{fork['tokens_out']}\n", total), compared
    assert re.search(r"   steps     A 3 +B 3 \(1 reused, 0 edited by hand\)\n", total), compared
    assert total.endswith("step outputs differ; final output differs\n"), compared

    # A run compared with itself; the JSON form.
    same = await server.cli("runs", "compare", source["id"], source["id"])
    assert same.code == 0 and same.out.count("same output") == 3, same
    assert "final output differs" not in same.out, same
    as_json = await server.cli("runs", "compare", source["id"], fork["id"], "--json")
    assert as_json.code == 0, as_json
    data = json.loads(as_json.out)
    assert [s["role"] for s in data["steps"]] == ["planner", "writer", "editor"]
    assert [s["reused_from_a"] for s in data["steps"]] == [True, False, False]
    assert [s["same_output"] for s in data["steps"]] == [True, False, False]
    assert data["steps"][0]["diff"] is None and "+++ B/writer" in data["steps"][1]["diff"]
    assert data["relation"] == "B is a fork of A from writer"

    # A fork of the fork, against the first run: its planner was copied from the fork's.
    again = await server.cli("runs", "fork", fork["id"], "--from", "editor", "--json")
    grandchild = await server.until(json.loads(again.out)["id"], "completed")
    compared = await server.cli("runs", "compare", source["id"], grandchild["id"])
    assert compared.code == 0, compared
    assert "B is a fork (2 forks down) of A" in compared.out, compared
    assert (f"1. planner  reused (from step {b['planner']['id']})\n   same output"
            in compared.out), compared
    assert "2. writer  reused (from step" in compared.out, compared

    gone = await server.cli("runs", "compare", source["id"], "ckrun000000000000000000000")
    assert gone.code == 1 and "HTTP 404" in gone.err, gone


async def test_fork_the_last_n_runs_prints_one_table(server: Server, worker: Any) -> None:
    workflow_id = await server.create("asks", offline("writer"),
                                      {"allow_input_requests": True})
    oldest = await finished_run(server, workflow_id, "First brief.")
    middle = await finished_run(server, workflow_id, "Second brief.")
    newest = await finished_run(server, workflow_id, "Third brief.")
    paused = await server.trigger(workflow_id, "ask me about tone")  # not ended: skipped
    await server.until(paused, "waiting_input")

    done = await server.cli("runs", "fork", "--workflow", workflow_id, "--last", "2",
                            "--from", "writer", "--instructions", "writer=You are a poet.",
                            "--interval", FAST)
    assert done.code == 0, done
    table, summary = done.out.split("\n\n")
    header, *rows = table.splitlines()
    assert re.fullmatch(r"SOURCE RUN +FORK RUN +STATUS +OUTPUT CHANGED +TOKENS \(IN\+OUT\)",
                        header), done
    assert [row.split()[0] for row in rows] == [newest["id"], middle["id"]], done
    forks = {run["forked_from"]["run_id"]: run for run in await server.runs(workflow_id)
             if "forked_from" in run}
    assert set(forks) == {newest["id"], middle["id"]}
    for row, source in zip(rows, (newest, middle), strict=True):
        fork = await server.run(forks[source["id"]]["id"])
        assert fork["status"] == "completed" and "You are a poet." in fork["output"]
        before = source["tokens_in"] + source["tokens_out"]
        after = fork["tokens_in"] + fork["tokens_out"]
        assert row.split() == [source["id"], fork["id"], "completed", "yes",
                               str(before), "→", str(after)], done
    assert summary.startswith("2 of 2 forked, 2 completed, output changed in 2; tokens "), done
    assert oldest["id"] not in done.out and paused not in done.out

    # Fewer finished runs than asked for: those there are, said on stderr. A fork
    # without edits from a step of the offline model answers the same.
    solo = await server.create("solo", offline("writer"))
    only = await finished_run(server, solo, "Just one.")
    done = await server.cli("runs", "fork", "--workflow", solo, "--last", "3",
                            "--from", "writer", "--json", "--interval", FAST)
    assert done.code == 0, done
    assert "only 1 finished run of the 3 asked for" in done.err, done
    (row,) = json.loads(done.out)
    assert row["source_run_id"] == only["id"] and row["status"] == "completed"
    assert row["output_changed"] is False and row["error"] is None
    assert row["tokens_before"] == only["tokens_in"] + only["tokens_out"]
    assert row["tokens_after"] == row["tokens_before"]  # the one step ran again

    # An edit every run refuses: one message, exit 1, nothing started.
    refused = await server.cli("runs", "fork", "--workflow", workflow_id, "--last", "3",
                               "--from", "nobody")
    assert refused.code == 1 and refused.out == "", refused
    assert refused.err.count("no agent with role 'nobody'") == 1, refused
    empty = await server.create("empty", offline("writer"))
    none = await server.cli("runs", "fork", "--workflow", empty, "--last", "1",
                            "--from", "writer")
    assert none.code == 1 and "has no finished runs" in none.err, none
