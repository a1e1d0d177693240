"""Option strings: parsing, escaping, defaults and the one-page budget."""

import pytest

from overlayctl.errors import InvalidArgument, TooManyLayers
from overlayctl.plan.mountplan import MountPlan
from overlayctl.plan.options import (
    CLASSIC_DATA_LIMIT,
    classic_data,
    escape_lower,
    escape_path,
    fsconfig_strings,
    merge_options,
    parse_feature_options,
)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/plain", "/plain"),
        ("/a:b", "/a\\:b"),
        ("/c,d", "/c\\,d"),
        ("/back\\slash", "/back\\\\slash"),
        ("/all:,\\", "/all\\:\\,\\\\"),
    ],
    ids=["plain", "colon", "comma", "backslash", "all"],
)
def test_escape_lower(path, expected):
    assert escape_lower(path) == expected


def test_escape_path_keeps_colons():
    assert escape_path("/u:x,y\\z") == "/u:x\\,y\\\\z"


@pytest.mark.parametrize(
    "items, expected",
    [
        (["volatile"], (("volatile", None),)),
        (["index=on,xino=auto"], (("index", "on"), ("xino", "auto"))),
        (["redirect_dir=follow", "userxattr"], (("redirect_dir", "follow"), ("userxattr", None))),
    ],
    ids=["flag", "comma-list", "two-items"],
)
def test_parse_feature_options(items, expected):
    assert parse_feature_options(items) == expected


@pytest.mark.parametrize(
    "item",
    ["bogus", "index=maybe", "volatile=on", "lowerdir=/x"],
    ids=["unknown", "bad-value", "flag-value", "layer-key"],
)
def test_parse_feature_options_refuses(item):
    with pytest.raises(InvalidArgument):
        parse_feature_options([item])


def test_defaults_are_explicit_and_overridable():
    assert dict(merge_options(())) == {"redirect_dir": "nofollow", "index": "off", "metacopy": "off"}
    assert dict(merge_options((("index", "on"),)))["index"] == "on"


def test_metacopy_drops_conflicting_redirect_default():
    merged = dict(merge_options((("metacopy", "on"),)))
    assert "redirect_dir" not in merged and merged["metacopy"] == "on"


def _plan(n: int, *, links: bool, length: int = 10) -> MountPlan:
    lowers = tuple(f"/s/layers/{i:0{length}d}/diff" for i in range(n))
    return MountPlan(
        lowers=lowers,
        target="/t",
        upper="/u",
        work="/w",
        links=tuple(f"l/{i:010d}" for i in range(n)) if links else None,
        link_base="/s" if links else None,
    )


def test_classic_data_uses_short_links():
    data = classic_data(_plan(2, links=True))
    assert data.startswith("lowerdir=l/0000000000:l/0000000001,upperdir=/u,workdir=/w")


def test_classic_data_refuses_more_than_a_page():
    # 300 links of 13 bytes fit; 300 long absolute paths do not.
    assert len(classic_data(_plan(300, links=True))) <= CLASSIC_DATA_LIMIT
    with pytest.raises(TooManyLayers, match="mount\\(2\\) takes at most 4095"):
        classic_data(_plan(300, links=False))


def test_layer_limit_in_both_apis():
    with pytest.raises(TooManyLayers, match="501 lower layers"):
        fsconfig_strings(_plan(501, links=False))
    assert len([k for k, _ in fsconfig_strings(_plan(500, links=False)) if k == "lowerdir+"]) == 500


def test_fsconfig_lowers_are_literal():
    plan = MountPlan(lowers=("/a:b,c\\d", "/e"), target="/t")
    assert fsconfig_strings(plan)[0] == ("lowerdir+", "/a:b,c\\d")
