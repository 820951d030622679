from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from headstart.data.readers import detect_format, read_table
from headstart.errors import ConfigError, DataError

ROWS = [
    {"text": "a fine film", "label": 1},
    {"text": "NA", "label": 0},
    {"text": "null", "label": 1},
    {"text": 'an "unbalanced quote', "label": 0},
]


def _write(path: Path, content: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _delimited(sep: str) -> str:
    if sep == ",":
        lines = ["text,label"] + [f'"{r["text"].replace(chr(34), chr(34) * 2)}",{r["label"]}' for r in ROWS]
    else:
        lines = ["text\tlabel"] + [f"{r['text']}\t{r['label']}" for r in ROWS]
    return "\n".join(lines) + "\n"


def _jsonl() -> str:
    return "".join(json.dumps(r) + "\n" for r in ROWS)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("d.csv", _delimited(",")),
        ("d.csv.gz", _delimited(",")),
        ("d.tsv", _delimited("\t")),
        ("d.tsv.gz", _delimited("\t")),
        ("d.jsonl", _jsonl()),
        ("d.jsonl.gz", _jsonl()),
        ("d.json", _jsonl()),
        ("d.json", json.dumps(ROWS, indent=1)),
    ],
)
def test_text_formats_round_trip(tmp_path: Path, name: str, content: str) -> None:
    frame = read_table(_write(tmp_path / name, content))
    assert list(frame.columns) == ["text", "label"]
    assert frame["text"].tolist() == [r["text"] for r in ROWS]
    assert frame["label"].tolist() == [r["label"] for r in ROWS]
    assert pd.api.types.is_integer_dtype(frame["label"])


@pytest.mark.parametrize("name", ["d.parquet", "d.pq"])
def test_parquet_round_trips(tmp_path: Path, name: str) -> None:
    pd.DataFrame(ROWS).to_parquet(tmp_path / name)
    frame = read_table(tmp_path / name)
    assert frame["text"].tolist() == [r["text"] for r in ROWS]
    assert frame["label"].tolist() == [0 + r["label"] for r in ROWS]


def test_explicit_format_reads_any_suffix(tmp_path: Path) -> None:
    frame = read_table(_write(tmp_path / "pairs.txt", _delimited("\t")), fmt="tsv")
    assert len(frame) == 4


def test_empty_cells_are_nan_but_na_words_stay_text(tmp_path: Path) -> None:
    frame = read_table(_write(tmp_path / "d.csv", "text,label\nNA,1\nnull,\n,0\nN/A,1\n"))
    assert frame["text"].tolist()[:2] == ["NA", "null"]
    assert frame["text"].tolist()[3] == "N/A"
    assert pd.isna(frame["text"].iloc[2])
    assert pd.isna(frame["label"].iloc[1])


def test_text_columns_keep_numeric_looking_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "text,label\n007,1\n1e5,0\n")
    assert read_table(path, text_columns=["text"])["text"].tolist() == ["007", "1e5"]


def test_bom_is_stripped_from_header_and_first_cells(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("cat,label,review\nbook,1,\ufeffgreat\nbook,0,bad\n", encoding="utf-8")
    frame = read_table(tmp_path / "d.csv")
    assert frame["review"].tolist() == ["great", "bad"]
    (tmp_path / "h.tsv").write_bytes("\ufeffQuality\ttext\n1\tx\n".encode())
    assert list(read_table(tmp_path / "h.tsv").columns) == ["Quality", "text"]


def test_detect_format() -> None:
    assert detect_format("a/B.CSV.GZ") == "csv"
    assert detect_format("x.pq") == "parquet"
    assert detect_format("x.anything", fmt="jsonl") == "jsonl"


def test_missing_file_names_path_and_similar_files(tmp_path: Path) -> None:
    for name in ("train.csv", "valid.csv", "notes.md"):
        (tmp_path / name).write_text("a\n1\n")
    with pytest.raises(DataError) as info:
        read_table(tmp_path / "trian.csv", where="data.train")
    message = str(info.value)
    assert "data.train" in message and "trian.csv" in message
    assert str((tmp_path / "trian.csv").resolve()) in message
    assert "Did you mean" in message and "'train.csv'" in message


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist either"):
        read_table(tmp_path / "nowhere" / "train.csv")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match=r"is a directory.*'train\.csv'.*data\.val"):
        read_table(tmp_path, where="data.val")


def test_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.txt", "a\tb\n")
    with pytest.raises(DataError) as info:
        read_table(path)
    message = str(info.value)
    assert (
        "'.txt'" in message and "'.csv'" in message and "'.parquet'" in message and "data.format" in message
    )


def test_unknown_format_name_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.csv", "a\n1\n")
    with pytest.raises(ConfigError, match="Did you mean 'csv'"):
        read_table(path, fmt="cvs")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.csv", "a,b\n1,2\n1,2,3,4\n", "line 3 has 4 fields, expected 2"),
        ("bad.tsv", "a\tb\n1\t2\n1\t2\t3\t4\n", "line 3 has 4 fields, expected 2"),
        ("bad.jsonl", '{"a": 1}\n{"a": \n', "line 2"),
        ("bad.json", '[{"a": 1}, 3]', "array element 1"),
        ("bad.jsonl.gz", '{"a": 1}\n[1, 2]\n', "line 2 is a JSON list"),
        ("bad.parquet", "not parquet", "as parquet"),
    ],
)
def test_parse_failure_is_one_line_data_error(tmp_path: Path, name: str, content: str, expected: str) -> None:
    with pytest.raises(DataError) as info:
        read_table(_write(tmp_path / name, content), where="data.test")
    message = str(info.value)
    assert expected in message and "data.test" in message and name in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "encoding", "named", "command"),
    [
        ("酒店的服务很好，房间干净，早餐也不错", "gbk", "GBK / GB18030", "iconv -f GB18030 -t UTF-8 f.csv > utf8_f.csv"),
        ("飯店的服務很好，房間乾淨", "big5", "Big5 (traditional Chinese)", "-f BIG5"),  # beside GBK: both CJK
        ("Café très agréable, hôtel près de la gare", "latin-1", "Windows-1252 / Latin-1", "iconv -f CP1252"),
        ("Отличный отель, очень чисто", "cp1251", "Windows-1251", "iconv -f CP1251"),
    ],
)
def test_not_utf8_names_the_likely_encoding(tmp_path: Path, text: str, encoding: str, named: str,
                                            command: str) -> None:
    """The error names the encoding the bytes look like (not GBK for Latin-1 text) and the command to convert."""
    (tmp_path / "f.csv").write_bytes(f"text,label\n{text},1\n{text},0\n".encode(encoding))
    with pytest.raises(DataError, match="not valid UTF-8") as info:
        read_table(tmp_path / "f.csv")
    message = str(info.value)
    assert named in message and command in message, message
    assert "iconv -f GBK" not in message  # the old advice, whatever the bytes


def test_not_utf8_in_a_gzip_file_gets_a_zcat_command(tmp_path: Path) -> None:
    import gzip

    with gzip.open(tmp_path / "f.csv.gz", "wb") as fh:
        fh.write("text,label\n酒店很好,1\n房间太小,0\n".encode("gbk"))
    with pytest.raises(DataError, match=r"zcat f\.csv\.gz \| iconv -f GB18030 -t UTF-8 \| gzip > utf8_f\.csv\.gz"):
        read_table(tmp_path / "f.csv.gz")


@pytest.mark.parametrize(("name", "content"), [("h.csv", "text,label\n"), ("e.csv", ""), ("e.jsonl", "\n\n")])
def test_zero_rows(tmp_path: Path, name: str, content: str) -> None:
    with pytest.raises(DataError, match=r"(no data rows|is empty)"):
        read_table(_write(tmp_path / name, content))


def test_headerless_tsv_with_column_names(tmp_path: Path) -> None:
    path = tmp_path / "afqmc.txt"  # AFQMC-style: no header, tab-separated, a quote inside a text
    path.write_text('花呗怎么还款\t借呗"如何"还\t0\n007\t1e5\t1\n', encoding="utf-8")
    frame = read_table(path, "tsv", text_columns=["a", "b"], column_names=["a", "b", "label"])
    assert list(frame.columns) == ["a", "b", "label"] and len(frame) == 2
    assert frame["a"].tolist() == ["花呗怎么还款", "007"] and frame["b"].tolist() == ['借呗"如何"还', "1e5"]
    assert frame["label"].tolist() == [0, 1]
    with pytest.raises(DataError, match=r"gives 2 names \('a', 'b'\) but the lines of .* have 3 fields"):
        read_table(path, "tsv", column_names=["a", "b"])
    records = tmp_path / "x.jsonl"
    records.write_text('{"a": 1}\n')
    with pytest.raises(ConfigError, match=r"header-less csv/tsv files, but data.train .* is read as jsonl"):
        read_table(records, column_names=["a"])


def test_headerless_unlabelled_file_may_lack_the_label_field(tmp_path: Path) -> None:
    """A file to predict on, header-less like the training data, usually has no label field (MRPC: first)."""
    from headstart.data.text import load_text_frame

    names = ["y", "q1", "q2"]
    unlabelled = _write(tmp_path / "new.tsv", "007\tsecond one\nabc\t1e5\n")
    frame = read_table(unlabelled, "tsv", text_columns=["q1", "q2"], column_names=names, optional_columns=["y"])
    assert list(frame.columns) == ["q1", "q2"] and frame["q1"].tolist() == ["007", "abc"]
    assert frame["q2"].tolist() == ["second one", "1e5"]  # text kept as read, not parsed as numbers
    rows = load_text_frame(unlabelled, text_column="q1", text_pair_column="q2", label_column="y", fmt="tsv",
                           column_names=names, where="--data")
    assert "label" not in rows.columns and rows["text"].tolist() == ["007", "abc"]
    labelled = _write(tmp_path / "scored.tsv", "1\t007\tsecond one\n")
    assert read_table(labelled, "tsv", column_names=names, optional_columns=["y"])["y"].tolist() == [1]
    with pytest.raises(DataError, match=r"gives 3 names \('y', 'q1', 'q2'\) but the lines of .* have 1 fields"):
        read_table(_write(tmp_path / "one.tsv", "only\n"), "tsv", column_names=names, optional_columns=["y"])
    with pytest.raises(DataError, match=r"gives 3 names .* have 2 fields"):  # labels required: no shortcut
        load_text_frame(unlabelled, text_column="q1", text_pair_column="q2", label_column="y", fmt="tsv",
                        column_names=names, require_labels=True, where="--data")


def test_headerless_file_hint_names_column_names(tmp_path: Path) -> None:
    from headstart.data.text import load_text_splits

    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"first text number {i} is here\tsecond text {i} there\t{i % 2}\n" for i in range(20)))
    with pytest.raises(DataError, match=r"may have no header line.*data.column_names"):
        load_text_splits(train=path, val=None, test=None, text_column="text", label_column="label")
    splits = load_text_splits(train=path, val=None, test=None, text_column="q1", text_pair_column="q2",
                              label_column="y", column_names=["q1", "q2", "y"], val_fraction=0.2)
    assert len(splits.train) + len(splits.val) == 20 and set(splits.train.columns) >= {"text", "text_pair"}


# Lines whose field count differs from the header -----------------------------------------------------------


def _field_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        read_table(path, where="--data", **kwargs)
    message = str(info.value)
    assert "\n" not in message and "--data" in message and path.name in message
    return message


def test_one_column_csv_with_an_unquoted_comma_is_not_read_as_an_index(tmp_path: Path) -> None:
    """pandas alone takes 'hello' as the index and ' world' as the text when the first data line has 2 fields."""
    path = _write(tmp_path / "new.csv", "text\nhello, world\nit was great\nok\n")
    message = _field_error(path)
    for fact in ("1 line of", "its header (line 1: 'text'; 1 field)", "separator: comma",
                 "line 2 has 2 fields, expected 1, and starts 'hello, world'",
                 'Quote fields that contain the separator, e.g. "a, b"', "format: tsv"):
        assert fact in message, (fact, message)


def test_text_label_csv_reports_long_and_short_lines_and_counts_the_rest(tmp_path: Path) -> None:
    lines = ["text,label", "fine,pos", "hello, world,pos", "ok"] + ["a, b,neg"] * 4
    message = _field_error(_write(tmp_path / "d.csv", "\n".join(lines) + "\n"))
    assert "6 lines of" in message
    assert "line 3 has 3 fields, expected 2, and starts 'hello, world,pos'" in message
    assert "line 4 has 1 field, expected 2, and starts 'ok'" in message
    assert "line 5 has 3 fields" in message and "line 6" not in message and "(and 3 more lines)" in message


def test_long_line_preview_is_cut(tmp_path: Path) -> None:
    message = _field_error(_write(tmp_path / "d.csv", "text\n" + "word, " * 40 + "\n"))
    assert "starts 'word, word," in message and "...'" in message and "word, " * 30 not in message


def test_tsv_with_a_stray_tab_names_the_line_and_the_tab_fix(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.tsv.gz", "text\tlabel\nfine\t1\nsplit\ttext\t0\n")
    message = _field_error(path)
    assert "separator: tab" in message and "line 3 has 3 fields, expected 2, and starts 'split\\ttext\\t0'" in message
    assert "same number of tabs" in message


def test_headerless_file_is_checked_against_its_first_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.txt", "q one\tq two\t1\nq three\tq\tfour\t0\n")
    message = _field_error(path, fmt="tsv", column_names=["a", "b", "label"])
    assert "its first line (line 1, 3 fields)" in message and "line 2 has 4 fields, expected 3" in message
    unlabelled = _write(tmp_path / "new.txt", "q one\tq two\nq three\n")
    message = _field_error(unlabelled, fmt="tsv", column_names=["a", "b", "label"], optional_columns=["label"])
    assert "line 2 has 1 field, expected 2" in message


def test_quoted_multiline_fields_blank_lines_and_long_texts_are_fine(tmp_path: Path) -> None:
    import csv

    long_text = "x" * 200_000  # beyond the csv module's default 128 KiB field limit
    content = f'text,label\n"one, two\nthree",1\n\n"{long_text}",0\n   \nfour,1\n'
    limit = csv.field_size_limit()
    frame = read_table(_write(tmp_path / "d.csv", content))
    assert frame["text"].tolist() == ["one, two\nthree", long_text, "four"] and frame["label"].tolist() == [1, 0, 1]
    assert csv.field_size_limit() == limit  # restored after the scan
    # A bad line after a multi-line record is named by its physical line in the file.
    message = _field_error(_write(tmp_path / "e.csv", 'text,label\n"one\ntwo",1\nbad\n'))
    assert "line 4 has 1 field" in message


def test_unbalanced_quote_is_pointed_out(tmp_path: Path) -> None:
    message = _field_error(_write(tmp_path / "q.csv", 'text,label\n"unterminated,1\nb,0\n'))
    assert "line 2 has 1 field, expected 2, and starts '\"unterminated,1'" in message
    assert "a quoted field runs on to line 3: check for an unbalanced quote" in message


def test_repeated_column_names_are_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.tsv", "a\tb\t1\n")
    with pytest.raises(ConfigError, match=r"data\.column_names \('q', 'q', 'y'\) names 'q' more than once"):
        read_table(path, column_names=["q", "q", "y"])


# A file whose separator is not the one its suffix (or data.format) says ------------------------------------


def _separator_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        read_table(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    return message


def test_tab_separated_file_named_csv_says_tsv(tmp_path: Path) -> None:
    """Read with commas, a TSV is one column named 'text\\tlabel': the message names the separator, not the column."""
    path = _write(tmp_path / "train.csv", _delimited("\t"))
    message = _separator_error(path)
    for fact in ("data.train: '", "train.csv' is read as csv (comma-separated) because of its suffix '.csv'",
                 "its header line holds tabs and no commas: 'text', 'label'", "one column ('text\\tlabel')",
                 "looks tab-separated (tsv)", "Set data.format: tsv", "rename the file to 'train.tsv'"):
        assert fact in message, (fact, message)
    message = _separator_error(path, fmt="csv")
    assert "because the format is set to 'csv' (data.format)" in message and "Set data.format: tsv" in message
    gz = _write(tmp_path / "train.csv.gz", _delimited("\t"))
    assert "rename the file to 'train.tsv.gz'" in _separator_error(gz)
    assert read_table(path, "tsv")["text"].tolist() == [r["text"] for r in ROWS]  # the fix works


def test_comma_separated_file_named_tsv_says_csv(tmp_path: Path) -> None:
    message = _separator_error(_write(tmp_path / "d.tsv", "text,label\nfine,1\nbad,0\n"))
    assert "read as tsv (tab-separated)" in message and "holds commas and no tabs" in message
    assert "Set data.format: csv" in message and "'d.csv'" in message


def test_new_file_for_a_run_is_told_to_rename(tmp_path: Path) -> None:
    """evaluate/predict --data decide the format by suffix, so renaming is the fix there."""
    message = _separator_error(_write(tmp_path / "new.csv", _delimited("\t")), where="--data")
    assert message.startswith("--data: '") and "Rename the file to 'new.tsv'" in message
    assert "data.format" not in message


def test_header_less_tab_file_named_csv(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.csv", "a\tb\t1\nc\td\t0\n")
    message = _separator_error(path, column_names=["q1", "q2", "y"])
    assert "its first line holds tabs and no commas: 'a', 'b', '1'" in message and "tsv" in message


@pytest.mark.parametrize(("name", "content"), [
    ("one.csv", "text\nhello\tworld\nok\n"),  # one column, a tab inside a text
    ("ok.csv", 'text,label\n"a\tb",1\n'),  # commas separate, the tab is text
    ("ok.tsv", "text\tlabel\na, b\t1\n"),  # tabs separate, the comma is text
    ("one.tsv", "text\na, b\n"),  # one-column tsv: no tab to find
])
def test_other_separator_inside_texts_is_fine(tmp_path: Path, name: str, content: str) -> None:
    assert len(read_table(_write(tmp_path / name, content))) >= 1
