"""Custom text metrics for tests (`metric: python:tests.custom_metrics:NAME`)."""


def first_char_is_answer(completion, answer, row):
    """1 if the completion starts with the answer's first character; reads a row column too (row["bonus"])."""
    return float(completion[:1] == answer[:1]) + float(row.get("bonus", 0))


def raises(completion, answer, row):
    raise ValueError(f"cannot score {completion[:3]!r}")


def returns_text(completion, answer, row):
    return "good"
