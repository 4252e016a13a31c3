"""The managed loop (docs/loop.md): agents that are a model, a system prompt and tools, run by the
platform. The loop runs in the server, so the model's API key never enters a sandbox; the tools
run in the run's sandbox.

    endpoints.py    which model endpoints a loop may call (setting `model_endpoints`)
    model.py        one model call in our own shape; openai_chat.py and anthropic_messages.py
                    speak the two wire formats through the providers' SDKs; providers.py picks one
    answer_size.py  an answer read up to a bound
    client.py       the run's HTTP client: closed at the end, it ends a call left in flight
    retry.py        429, 5xx and connection failures tried again with backoff
    watch.py        the run's deadline and cancel check
    sandbox.py      where tools run: `ToolSandbox`, and `HeldTools` on a held sandbox
    tools.py        the built-in tools, their schemas, and each run as processes in the sandbox
    clip.py         output kept within a limit, head and tail
    conversation.py what the model is sent every turn, bounded
    driver.py       the loop: `run_loop`, each step an event
    outcome.py      how it ends: status, answer or reason, usage

The manifest's `loop:` section is `bundle/loop_manifest.py`, beside the rest of the manifest.
Nothing is imported here: the manifest's parser imports `endpoints` without loading the SDKs.
"""
