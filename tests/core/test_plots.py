"""Plot helpers that are pure data (the images themselves are checked in the leaderboard tests)."""

def test_points_of_one_method_with_several_models_are_labelled_apart():
    from bench.core.plots import _point_labels

    rows = [("dpo", "m-lora", "d"), ("dpo", "m-lora-beta0.01", "d"),
            ("dpo", "m-lora-lr0.001", "d"), ("sft", "m", "d"), ("kd [cpu-long]", "m-16L", "d")]
    assert _point_labels(rows) == {
        rows[0]: "dpo", rows[1]: "dpo beta0.01", rows[2]: "dpo lr0.001", rows[3]: "sft",
        rows[4]: "kd [cpu-long]"}
