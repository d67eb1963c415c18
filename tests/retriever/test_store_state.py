"""The retriever's state file under concurrent saves: an interrupted run's final save starts
while the save it interrupted still runs in its worker thread."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from fastpoplib._store import State


def test_overlapping_saves_of_one_state_do_not_collide(tmp_path: Path) -> None:
    state = State(tmp_path, "user@pop.example.org:995")
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def save_many(tag: str) -> None:
        start.wait(timeout=10)
        for i in range(300):
            state.keys = {f"{tag}{i}"}
            try:
                state.save(state.dump())
            except OSError as exc:  # the old code: FileNotFoundError from the shared temporary file
                failures.append(exc)
                return

    threads = [threading.Thread(target=save_many, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures[0]
    assert len(json.loads(state.path.read_bytes())["keys"]) == 1
