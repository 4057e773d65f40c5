from processors.monic import map_transitions


def test_survival():
    t = map_transitions({1: {0: 0.9, -1: 0.1}}, {1: 5.0})
    assert t.survived == {1: 0} and not t.absorptions and not t.splits


def test_absorption_keeps_heavier_id():
    t = map_transitions({1: {0: 1.0}, 2: {0: 0.8}}, {1: 2.0, 2: 9.0})
    assert t.absorptions == [(2, [1])]


def test_absorption_tie_keeps_older_id():
    t = map_transitions({7: {0: 1.0}, 3: {0: 1.0}, 5: {0: 1.0}}, {3: 1.0, 5: 1.0, 7: 1.0})
    assert t.absorptions == [(3, [5, 7])]


def test_split_orders_parts_by_share_then_group():
    t = map_transitions({1: {4: 0.4, 2: 0.4, 3: 0.2}}, {1: 1.0})
    assert t.splits == [(1, [2, 4])]


def test_split_needs_enough_total():
    t = map_transitions({1: {0: 0.3, 1: 0.3, -1: 0.4}}, {1: 1.0})
    assert t.splits == [] and t.unmatched == [1]


def test_outliers_only_is_unmatched():
    t = map_transitions({1: {-1: 1.0}}, {1: 1.0})
    assert t.unmatched == [1] and not t.survived and not t.splits


def test_empty_scope():
    t = map_transitions({}, {})
    assert not (t.survived or t.absorptions or t.splits or t.unmatched)
