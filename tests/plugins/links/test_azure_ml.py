"""The "Azure ML job" extra link."""
from __future__ import annotations

def test_extra_link_reads_studio_url_from_xcom(monkeypatch):
    from batch_scoring.links import azure_ml as links

    seen = {}

    def get_value(*, key, ti_key):
        seen.update(key=key, ti_key=ti_key)
        return "https://ml.azure.com/runs/job-1"

    monkeypatch.setattr(links.XCom, "get_value", staticmethod(get_value))
    link = links.AzureMLJobLink()
    assert link.name == "Azure ML job"
    assert link.get_link(None, ti_key="k") == "https://ml.azure.com/runs/job-1"
    assert seen == {"key": "studio_url", "ti_key": "k"}
    from batch_scoring.operators.azure_ml import AzureMLScoringOperator

    assert [l.name for l in AzureMLScoringOperator.operator_extra_links] == ["Azure ML job"]
