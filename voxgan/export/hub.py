"""Export folders on the Hugging Face Hub: uploads and downloads through ``huggingface_hub``, an optional
dependency imported only when a hub id is given or a folder is pushed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from voxgan.export.folder import CONFIG_FILE, FORMAT, WEIGHTS_FILE, ExportError, is_export
from voxgan.io import error_summary

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
HUB_HINT = "check the id, the network and HF_TOKEN (a token with access to the repository)"


def push_folder(
    folder: str | Path, repo_id: str, token: str | None = None, private: bool | None = None
) -> str:
    """Upload an export folder to the Hub model repository ``repo_id`` (created if needed); the commit URL."""
    folder = Path(folder)
    if not is_export(folder):
        raise ExportError(f"{folder} is not an export folder (no {CONFIG_FILE} of format {FORMAT})")
    HfApi = _hub().HfApi  # noqa: N806

    try:
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, repo_type="model", commit_message="Upload voxgan generator"
        )
    except Exception as error:  # huggingface_hub and httpx raise many unrelated types for network and auth
        message = f"could not upload {folder} to the hub as {repo_id} ({error_summary(error)}); {HUB_HINT}"
        raise ExportError(message) from error
    return str(getattr(commit, "commit_url", commit))


def download(hub_id: str, token: str | None, revision: str | None) -> Path:
    """The folder of the hub repository's config and weights in the local Hugging Face cache."""
    snapshot_download = _hub().snapshot_download

    try:
        files = [CONFIG_FILE, WEIGHTS_FILE]
        return Path(snapshot_download(hub_id, revision=revision, token=token, allow_patterns=files))
    except Exception as error:  # huggingface_hub and httpx raise many unrelated types for network and auth
        raise ExportError(
            f"{hub_id} is no local folder, and fetching it from the hub failed "
            f"({error_summary(error)}); {HUB_HINT}"
        ) from error


def _hub() -> Any:
    """huggingface_hub, an optional dependency: only hub ids and uploads need it."""
    try:
        import huggingface_hub
    except ImportError:
        raise ExportError("hub ids and push_to_hub need huggingface_hub: pip install 'voxgan[hub]'") from None
    return huggingface_hub
