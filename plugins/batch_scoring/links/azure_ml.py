"""Extra link "Azure ML job": the job's page in Azure ML studio.

The operator pushes the job's ``studio_url`` to XCom before it waits; Airflow 3
evaluates the link on the worker when the task ends and stores the URL.
"""
from __future__ import annotations

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

STUDIO_URL_KEY = "studio_url"
JOB_NAME_KEY = "azureml_job_name"


class AzureMLJobLink(BaseOperatorLink):
    """The task instance's Azure ML job in the studio: the XCom ``studio_url`` its operator pushed."""

    name = "Azure ML job"

    def get_link(self, operator, *, ti_key) -> str:
        """The studio URL, or "" when the task pushed none (local backend, or failed before submitting)."""
        url = XCom.get_value(key=STUDIO_URL_KEY, ti_key=ti_key)
        return str(url) if url else ""
