"""Class lists: the name,id csv, the txt source, build_class_mapping_file.py and the shipped lists."""
import argparse
from pathlib import Path

import pytest

import build_class_mapping_file
from retinanet.coco_names import COCO_CLASS_NAMES, canonical_class_name
from retinanet.data import read_class_list, read_class_names_txt, write_class_list
from retinanet.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def test_names_come_back_in_id_order_whatever_the_row_order(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("head,1\n\nperson , 0\ncar,2\n")
    assert read_class_list(path) == ["person", "head", "car"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("person,0\nhead,1\nperson,2\n", ":3: duplicate class name 'person' (first on line 1)"),
        ("person,0\nhead,0\n", ":2: duplicate class id 0 (first on line 1)"),
        ("person,0\nhead,2\n",
         ":2: class id 2 out of range; ids must be 0..1 with none missing (missing: 1)"),
        ("person,0\nhead,-1\n", ":2: class id -1 out of range"),
        ("person,0\nhead,one\n", ":2: class id 'one' is not an integer"),
        ("person,0\nhead\n", ":2: expected 2 fields 'class_name,id', got 1"),
        ("person,0,extra\n", ":1: expected 2 fields"),
        ("__ignore__,0\n", ":1: '__ignore__' is reserved for ignore regions"),
        ("__ignore__:head,0\n", ":1: '__ignore__:head' is reserved"),
        (",0\n", ":1: empty class name"),
    ],
)
def test_malformed_class_lists_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "classes.csv"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        read_class_list(path)
    assert str(error.value).startswith(f"{path}{message}")


def test_empty_and_missing_class_lists(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="class list is empty"):
        read_class_list(empty)
    with pytest.raises(UserError, match="class list not found"):
        read_class_list(tmp_path / "nope.csv")


def test_write_then_read_round_trip_with_awkward_names(tmp_path):
    names = ["person", "traffic light", "a,b", "head"]
    write_class_list(tmp_path / "c.csv", names)
    assert (tmp_path / "c.csv").read_text().splitlines()[2] == '"a,b",2'
    assert read_class_list(tmp_path / "c.csv") == names


def test_write_refuses_duplicates_and_reserved_names(tmp_path):
    with pytest.raises(UserError, match="class 2: duplicate class name 'a'"):
        write_class_list(tmp_path / "c.csv", ["a", "b", "a"])
    with pytest.raises(UserError, match="reserved"):
        write_class_list(tmp_path / "c.csv", ["a", "__ignore__"])
    assert not (tmp_path / "c.csv").exists()


def test_txt_ignores_blank_lines_and_spaces_and_reports_duplicates(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("  person \n\n\thead\n\n")
    assert read_class_names_txt(path) == ["person", "head"]
    path.write_text("person\nhead\n\n  person\n")
    with pytest.raises(UserError) as error:
        read_class_names_txt(path)
    assert str(error.value) == f"{path}:4: duplicate class name 'person' (first on line 1)"


def test_build_class_mapping_file_writes_the_csv_beside_the_txt_by_default(tmp_path, capsys):
    txt = tmp_path / "names.txt"
    txt.write_text("person\n\n head\n")
    build_class_mapping_file.main(argparse.Namespace(class_names_txt=str(txt), class_names_csv=None))
    assert (tmp_path / "names.csv").read_text() == "person,0\nhead,1\n"
    assert "wrote 2 classes" in capsys.readouterr().out
    out = tmp_path / "sub" / "out.csv"
    build_class_mapping_file.main(argparse.Namespace(class_names_txt=str(txt), class_names_csv=str(out)))
    assert read_class_list(out) == ["person", "head"]


def test_build_class_mapping_file_parser_accepts_the_original_short_flags():
    args = build_class_mapping_file.get_args_parser().parse_args(["-t", "a.txt", "-c", "b.csv"])
    assert (args.class_names_txt, args.class_names_csv) == ("a.txt", "b.csv")


def test_shipped_coco_list_is_the_checkpoint_order_with_voc_spellings_and_head():
    names = read_class_list(REPO / "class_names" / "coco_names_with_head.csv")
    assert names == read_class_names_txt(REPO / "class_names" / "coco_names_with_head.txt")
    assert len(names) == 81 and names[80] == "head"
    assert [canonical_class_name(name) for name in names[:80]] == list(COCO_CLASS_NAMES)
    voc_spellings = {3: "motorbike", 4: "aeroplane", 57: "sofa", 58: "pottedplant", 60: "diningtable",
                     62: "tvmonitor"}
    assert {index: names[index] for index in voc_spellings} == voc_spellings


def test_shipped_crowdhuman_list():
    assert read_class_list(REPO / "class_names" / "crowdhuman.csv") == ["person", "head"]
    assert read_class_names_txt(REPO / "class_names" / "crowdhuman.txt") == ["person", "head"]
