"""``python -m visioncreator.policy.vllm``: serve a policy model with vLLM (``serve-policy``)."""

from visioncreator.policy.vllm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
