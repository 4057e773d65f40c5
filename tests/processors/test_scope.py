from typing import Any

from processors.scope import change_event
from schemas.outputs import ChangeEvent


def test_change_event_is_what_model_construct_builds() -> None:
    values: dict[str, Any] = {
        "event_id": "e",
        "kind": "merged",
        "scope": "document/m",
        "cluster_id": "document-1-000002",
        "related_ids": ["document-1-000001"],
        "event_time": 12.5,
        "sequence": 3,
        "size": 4,
        "weight": 2.25,
        "moved_item_ids": [],
        "reason": "average_link",
    }
    fast = change_event(dict(values))
    slow = ChangeEvent.model_construct(**values)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump_json() == slow.model_dump_json()
    assert ChangeEvent.model_validate_json(fast.model_dump_json()) == slow
