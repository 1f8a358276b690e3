"""Several OpenAI-compatible providers behind one Provider (DESIGN §6): a call
goes to the first whose circuit allows it and moves on to the next when that one
is down (a transient error after the SDK's retries, no first token in
GENERATION_FIRST_TOKEN_SECONDS) or misconfigured (401/403, unknown model, logged
as an error naming it). A rejected request (400) or unusable output does not
move on: another provider would get the same request.

A provider with another behind it gives up after the SDK's own retries, without
the policy's backoff rounds: the next provider serves sooner than a round would,
which keeps generations completing; the last one keeps the rounds. All of it is
inside one provider call, so the runner's attempt (its id, its lease, its
deadline) is the same across a failover; each answer starts the live content
over (the policy restarts the sink), and each request is metered under the
provider that served it."""

import logging
from collections.abc import Awaitable, Callable

from django.conf import settings

from generation.engine import in_worker_thread
from generation.errors import (
    AllProvidersDown,
    ProviderMisconfigured,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from generation.providers import circuit
from generation.providers.base import DISCARD, GenerationRequest, OutputSink, ProgressCallback
from generation.providers.policy import Policy
from generation.schemas import Quiz, ResourceList, TutorialDraft

logger = logging.getLogger(__name__)

# What moves a call on to the next provider (and counts against a circuit).
PROVIDER_DOWN = (ProviderRateLimited, ProviderUnavailable, ProviderTimeout, ProviderMisconfigured)


class Failover:
    """Implements generation.providers.base.Provider over policies, in order."""

    def __init__(self, policies: list[Policy]) -> None:
        self.policies = policies

    @property
    def name(self) -> str:
        return self.policies[0].name

    @property
    def model(self) -> str:
        return self.policies[0].model

    async def tutorial(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        output: OutputSink = DISCARD,
    ) -> tuple[TutorialDraft, str]:
        highest = 0

        async def monotonic(percentage: int) -> None:
            # A failover starts its estimate over; what was reported stays.
            nonlocal highest
            if percentage > highest:
                highest = percentage
                await on_progress(percentage)

        return await self._first_up(
            lambda policy: policy.tutorial(request, monotonic, output), output
        )

    async def resources(
        self, request: GenerationRequest, output: OutputSink = DISCARD
    ) -> tuple[ResourceList, str]:
        return await self._first_up(lambda policy: policy.resources(request, output), output)

    async def quiz(
        self, request: GenerationRequest, output: OutputSink = DISCARD
    ) -> tuple[Quiz, str]:
        return await self._first_up(lambda policy: policy.quiz(request, output), output)

    async def _first_up[Answer](
        self, call: Callable[[Policy], Awaitable[Answer]], output: OutputSink
    ) -> Answer:
        down: list[str] = []
        misconfigured: list[ProviderMisconfigured] = []
        remaining = self.policies
        while remaining:
            names = [policy.name for policy in remaining]
            position = await in_worker_thread(circuit.first_allowed)(names)
            down.extend(f"{name}: circuit open" for name in names[:position])
            if position == len(remaining):
                break
            policy, remaining = remaining[position], remaining[position + 1 :]
            # The live draft names who writes what follows (the policy restarts it).
            output.written_by(policy)
            try:
                answer = await call(policy)
            except PROVIDER_DOWN as error:
                if isinstance(error, ProviderMisconfigured):
                    # Never the detail: a 401's message can quote part of the key.
                    logger.error(
                        "Provider %s refused its configuration (API key or model "
                        "%s); moving to the next provider.",
                        policy.name,
                        policy.model,
                    )
                else:
                    logger.warning("Provider %s is down, failing over: %s", policy.name, error)
                await in_worker_thread(circuit.failed)(policy.name)
                down.append(f"{policy.name}: {type(error).__name__}")
                if isinstance(error, ProviderMisconfigured):
                    misconfigured.append(error)
                continue
            await in_worker_thread(circuit.succeeded)(policy.name)
            return answer
        if len(misconfigured) == len(self.policies):
            # No provider is down, each is set up wrong: waiting cannot fix that.
            raise ProviderMisconfigured("; ".join(down))
        raise AllProvidersDown("; ".join(down))


def failover_from_settings() -> Failover:
    """The configured providers, each its own transport (its name on its usage)."""
    from generation.providers.config import configured
    from generation.providers.openai import OpenAITransport

    configs = configured()
    policies = []
    for position, config in enumerate(configs, start=1):
        last = position == len(configs)
        policies.append(
            Policy(
                OpenAITransport(config),
                transient_rounds=None if last else 1,
                first_token_seconds=None if last else settings.GENERATION_FIRST_TOKEN_SECONDS,
            )
        )
    return Failover(policies)
