"""``prelabel bulk``: the project's settings from Label Studio, a progress line, a summary, and a second run that
continues an interrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.cli import main
from backend.jobs.store import JobStore
from tests.backend.jobs.conftest import FakeLabelStudio, make_client, regions


@pytest.fixture
def env(tmp_path: Path, fake_ls: FakeLabelStudio, monkeypatch: pytest.MonkeyPatch) -> Path:
    model_dir = tmp_path / "model_dir"
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.setenv("LABEL_STUDIO_URL", fake_ls.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "token")
    monkeypatch.setenv("PRELABEL_JOB_PAGE_SIZE", "3")
    return model_dir


def test_bulk_prelabels_a_project_never_set_up_here_and_sums_up(
    env: Path, fake_ls: FakeLabelStudio, tmp_path: Path, monkeypatch, capsys
) -> None:
    fake_ls.annotate(1)
    assert main(["bulk", "--project", "3"]) == 0
    out, err = capsys.readouterr()
    stored = fake_ls.per_task()
    assert sorted(stored) == list(range(2, 11))
    for task_id, (entry,) in stored.items():
        assert regions(entry) == fake_ls.expected[task_id]
    # the version a server set up by Label Studio would answer: a later retrieve adds nothing
    server = make_client(tmp_path / "server", fake_ls.url, monkeypatch)
    assert {entry["model_version"] for (entry,) in stored.values()} == {server.model_version}
    assert "job 1 (project 3): done" in out and "predicted 9, skipped 1" in out and "images/s" in out
    assert "10/10 100%" in err and "tasks/s ETA" in err


def test_an_interrupted_bulk_run_continues_where_it_stopped(
    env: Path, fake_ls: FakeLabelStudio, monkeypatch, capsys
) -> None:
    real_advance = JobStore.advance
    calls = []

    def interrupted_on_the_third_page(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C after page 3 was written, before it was recorded
        return real_advance(self, *args, **kwargs)

    monkeypatch.setattr(JobStore, "advance", interrupted_on_the_third_page)
    assert main(["bulk", "--project", "3", "--tasks", "1-8,10"]) == 130
    assert "run the same command again to continue job 1" in capsys.readouterr().err
    assert sorted(fake_ls.per_task()) == [*range(1, 9), 10]  # page 3 (7, 8, 10) was written

    monkeypatch.setattr(JobStore, "advance", real_advance)
    assert main(["bulk", "--project", "3", "--tasks", "1-8,10"]) == 0
    out, err = capsys.readouterr()
    assert "job 1: resuming after task 6 (6 tasks done)" in err
    assert sorted(fake_ls.per_task()) == [*range(1, 9), 10] and all(len(e) == 1 for e in fake_ls.per_task().values())
    assert "predicted 6, skipped 3" in out  # 7, 8, 10 were written before the interruption


def test_bulk_names_what_is_wrong(env: Path, fake_ls: FakeLabelStudio, capsys) -> None:
    assert main(["bulk", "--project", "8"]) == 1
    assert "could not read project 8's settings from Label Studio" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bulk", "--project", "3", "--tasks", "a-b"])
    assert "task ids must look like 4,5,10-20" in capsys.readouterr().err
