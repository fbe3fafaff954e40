"""The time left on a round's progress line: each method at its own pace, whatever ran before or between."""

import re

from ideal_pipeline.progress import MethodProgress, time_left


def minutes_left(line: str) -> int:
    return int(re.match(r"(\d+) min left", line).group(1))


def test_time_left_counts_only_the_rounds_still_to_run_at_each_methods_own_pace():
    ideal = MethodProgress(total=20, done=2, seconds=2 * 60.0)  # 1 min a round, 18 rounds left
    noise = MethodProgress(total=20, done=1, seconds=30.0)  # 30 s a round, 19 left
    assert minutes_left(time_left([ideal, noise])) == round(18 + 19 * 0.5)


def test_a_method_not_started_yet_is_counted_at_the_mean_pace_of_the_others():
    started = MethodProgress(total=10, done=5, seconds=5 * 120.0)
    waiting = MethodProgress(total=10)
    assert minutes_left(time_left([started, waiting])) == 5 * 2 + 10 * 2


def test_nothing_measured_yet_and_nothing_left_say_so():
    assert time_left([MethodProgress(total=3)]) == "-"
    assert time_left([MethodProgress(total=3, done=3, seconds=9.0)]) == "done"
    assert time_left([MethodProgress(total=30, done=29, seconds=29.0)]) == "1 s left"


def test_the_victims_epoch_line_gives_the_time_left_as_a_round_line_does(caplog):
    import time

    from ideal_pipeline.pipelines.victim.nodes import EpochLog

    log = EpochLog(epochs=3, images=100, started=time.perf_counter() - 120)  # the first epoch took 2 min
    with caplog.at_level("INFO"):
        log(60)  # within the first epoch: no line
        log(40)
    (line,) = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"victim epoch 1/3 \| 12\d s \| 4 min left \(~\d\d:\d\d\)", line)
