"""The emulated compute cluster: runs a job's command as a local process over datastore paths in Azurite.

A job walks Azure ML's states: NotStarted -> Queued (until a node of its compute is free) -> Preparing
(inputs and outputs mounted) -> Running (the command) -> Finalizing (outputs written back) -> Completed or
Failed by the exit code; a cancel turns any live state into CancelRequested, then Canceled.

Mount semantics, after Azure ML's documentation for the modes the product uses
(https://learn.microsoft.com/azure/machine-learning/how-to-read-write-data-v2):

* ``ro_mount`` / ``download`` inputs: the blob (``uri_file``) or every blob under the folder
  (``uri_folder``) is copied to a node-local folder and made read-only; the command gets its local path;
* ``rw_mount`` / ``upload`` outputs (``uri_folder``): the folder's existing blobs are visible, and what the
  command leaves there (new or changed files written, deleted files deleted) is in the container afterwards,
  also when the command fails or the job is cancelled. Unlike blobfuse, writes reach blob storage when
  the command ends, not when each file is closed.

The command's ``python`` is the emulator's interpreter; ``PYTHONPATH`` is removed from its environment
and the code asset's folder is its working directory, as on a node where only the code snapshot and the
environment's packages exist.
"""
from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from devstack.aml_emulator.state import Job, Workspace

_PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs)\.([A-Za-z0-9_]+)\}\}")
_INPUT_MODES = {"ReadOnlyMount", "Download"}
_OUTPUT_MODES = {"ReadWriteMount", "Upload"}


class Cluster:
    """Runs the workspace's jobs, one thread each, at most ``computes[name]`` at once per compute.

    :param workspace: the registry and jobs (``state.Workspace``).
    :param blob_conn_str: connection string of the Azurite account the datastores' containers are in.
    :param step_seconds: how long each of the short states lasts (NotStarted, Preparing, ...), seconds.
    """

    def __init__(self, workspace: Workspace, blob_conn_str: str, step_seconds: float = 0.2):
        from azure.storage.blob import BlobServiceClient

        self.ws, self.step = workspace, step_seconds
        self.blobs = BlobServiceClient.from_connection_string(blob_conn_str)
        self.nodes = {name: threading.Semaphore(n) for name, n in workspace.computes.items()}

    def start(self, job: Job) -> None:
        """Run ``job`` in a daemon thread (returns at once)."""
        threading.Thread(target=self._run, args=(job,), name=f"job-{job.name}", daemon=True).start()

    def cancel(self, job: Job) -> None:
        """Ask ``job`` to stop: CancelRequested now, Canceled once its thread has stopped the command."""
        if self.ws.set_status(job, "CancelRequested"):
            job.cancel.set()

    # --- the job's life ---------------------------------------------------------------

    def _wait(self, job: Job, seconds: float) -> bool:
        """Sleep ``seconds``; True when the job was cancelled meanwhile."""
        return job.cancel.wait(seconds)

    def _move(self, job: Job, status: str) -> bool:
        """Wait one step, then move to ``status``; False when cancelled (then it is Canceled)."""
        if self._wait(job, self.step) or not self.ws.set_status(job, status):
            self._canceled(job)
            return False
        return True

    def _canceled(self, job: Job) -> None:
        if job.status == "CancelRequested":
            self.ws.set_status(job, "Canceled")

    def _run(self, job: Job) -> None:
        compute = job.body["properties"]["computeId"].rsplit("/", 1)[-1]
        if not self._move(job, "Queued"):
            return
        if job.fault.get("stay") == "Queued":
            job.cancel.wait()
            self._canceled(job)
            return
        node = self.nodes[compute]
        while not node.acquire(timeout=0.05):
            if job.cancel.is_set():
                self._canceled(job)
                return
        try:
            self._on_node(job)
        except Exception as exc:  # an emulator fault must end the job, not leave it Running for ever
            job.log += f"\nemulator: {type(exc).__name__}: {exc}\n"
            self.ws.set_status(job, "Failed")
        finally:
            node.release()

    def _on_node(self, job: Job) -> None:
        if not self._move(job, "Preparing"):
            return
        if "fail_log" in job.fault:
            job.log = job.fault["fail_log"]
            if self._move(job, "Running"):
                self._move(job, "Failed")
            return
        props = job.body["properties"]
        with tempfile.TemporaryDirectory(prefix=f"aml-node-{job.name[:40]}-") as tmp:
            tmp = Path(tmp)
            paths, before = {}, {}
            for key, spec in (props.get("inputs") or {}).items():
                if spec.get("mode", "ReadOnlyMount") not in _INPUT_MODES:
                    raise ValueError(f"input {key}: mode {spec.get('mode')} is not emulated")
                paths[("inputs", key)] = self._mount_in(spec, tmp / "inputs" / key, read_only=True)
            for key, spec in (props.get("outputs") or {}).items():
                if spec.get("mode", "ReadWriteMount") not in _OUTPUT_MODES or spec.get("jobOutputType") != "uri_folder":
                    raise ValueError(f"output {key}: {spec.get('jobOutputType')} {spec.get('mode')} is not emulated")
                local = self._mount_in(spec, tmp / "outputs" / key, read_only=False)
                paths[("outputs", key)] = local
                before[key] = _snapshot(local)
            if not self._move(job, "Running"):
                return
            code = self.ws.codes[job.code]
            try:
                rc = self._command(job, props["command"], paths, code)
            finally:
                for key, spec in (props.get("outputs") or {}).items():
                    self._write_back(spec, paths[("outputs", key)], before[key])
            if job.cancel.is_set():
                self._canceled(job)
            elif self._move(job, "Finalizing"):
                self._move(job, "Completed" if rc == 0 else "Failed")

    def _command(self, job: Job, command: str, paths: dict, code: Path) -> int | None:
        cmd = _PLACEHOLDER.sub(lambda m: shlex.quote(str(paths[(m.group(1), m.group(2))])), command)
        argv = shlex.split(cmd)
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        log_path = self.ws.state_dir / "jobs" / f"{job.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w+") as out:
            out.write(f"$ {cmd}\n")
            out.flush()
            proc = subprocess.Popen(argv, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                if job.cancel.wait(0.05):
                    proc.kill()
                    proc.wait()
            out.write(f"exit code {proc.returncode}\n")
            out.seek(0)
            job.log = out.read()
        return proc.returncode

    # --- mounts -----------------------------------------------------------------------

    def _mount_in(self, spec: dict, local: Path, read_only: bool) -> Path:
        """Copy the spec's datastore path into ``local``; returns the path the command gets."""
        container, path = self.ws.datastore_path(spec["uri"])
        client = self.blobs.get_container_client(container)
        if spec.get("jobInputType") == "uri_file":
            target = local / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(client.download_blob(path).readall())  # ResourceNotFoundError: the job fails
            files = [target]
        else:
            local.mkdir(parents=True, exist_ok=True)
            prefix = path.rstrip("/") + "/" if path.strip("/") else ""
            files = []
            for blob in client.list_blobs(name_starts_with=prefix or None):
                dest = local / blob.name[len(prefix):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(client.download_blob(blob.name).readall())
                files.append(dest)
            target = local
        if read_only:
            for f in files:
                f.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        return target

    def _write_back(self, spec: dict, local: Path, before: dict[str, bytes]) -> None:
        """Upload new/changed files of an output folder and delete the blobs of deleted ones."""
        container, path = self.ws.datastore_path(spec["uri"])
        client = self.blobs.get_container_client(container)
        prefix = path.rstrip("/") + "/" if path.strip("/") else ""
        now = _snapshot(local)
        for rel, data in now.items():
            if before.get(rel) != data:
                client.upload_blob(prefix + rel, data, overwrite=True)
        for rel in set(before) - set(now):
            client.delete_blob(prefix + rel)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

