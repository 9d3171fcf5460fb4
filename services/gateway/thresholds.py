"""An event's decision thresholds: its target error rates in, distances out, through the model's calibration.

- 1:1 verify: the distance whose calibrated FMR is the event's `target_fmr` (default 1e-3).
- 1:K identify: the distance at which a gallery of the event's current size admits strangers at `target_fpir`
  (default 0.003): it tightens as people are enrolled, since a stranger meets every template at once
  (`services/contracts/calibration.py`). The matcher reports the size it searched with every answer.
- The margin: the nearest attendee must beat the second by more than it (default: the calibrated margin; an
  exact tie never admits, even at margin 0).
- An expert's explicit distance is refused (422 `threshold_too_lax`) when its calibrated FMR is above 1e-2,
  unless the event is created or updated with `force_thresholds`: a typo such as 0.83 for 0.083 must not open
  the gate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Unprocessable
from services.contracts.calibration import MAX_OVERRIDE_FMR, Calibration, load_calibration
from services.gateway.schemas import ExpectedRates
from services.gateway.tables import Attendee, Event

log = logging.getLogger("facegate.gateway.thresholds")


def calibration_of(event: Event) -> Calibration:
    return calibration_for(event.model_id)


def calibration_for(model_id: str) -> Calibration:
    cal = load_calibration(model_id)
    if cal is None:  # a model this build does not know (or cannot calibrate): refuse rather than guess a distance
        raise Unprocessable(f"unknown model {model_id!r} (no calibration in this build)", code="unknown_model")
    return cal


def verify_threshold(event: Event, templates: int = 1) -> float:
    """The 1:1 distance for an attendee with this many templates (photos and their mean): the target FMR holds per
    attendee, not per template. An organiser's override is a distance and is used as it is."""
    if event.verify_threshold is not None:
        return event.verify_threshold
    return calibration_of(event).verify_threshold(event.target_fmr, templates)


def identify_margin(event: Event) -> float:
    return event.identify_margin if event.identify_margin is not None else calibration_of(event).margin


def identify_threshold(event: Event, templates: int, attendees: int) -> float:
    """For a gallery of `templates` templates of `attendees` people (what the matcher searched)."""
    if event.identify_threshold is not None:
        return event.identify_threshold
    return calibration_of(event).identify_threshold(
        event.target_fpir, templates, attendees, calibrated_margin=event.identify_margin is None
    )


def check_override(model_id: str, field: str, value: float | None, *, force: bool) -> None:
    """Refuse an explicit distance whose calibrated FMR is above MAX_OVERRIDE_FMR, unless forced (and logged)."""
    if value is None:
        return
    cal = calibration_for(model_id)
    fmr = cal.fmr(value)
    if fmr <= MAX_OVERRIDE_FMR:
        return
    if force:
        log.warning("%s %.4f forced for model %s: calibrated FMR %.3g", field, value, model_id, fmr)
        return
    limit = cal.threshold_at_fmr(MAX_OVERRIDE_FMR)
    raise Unprocessable(
        f"{field} {value:g} would admit about 1 impostor in {max(1, round(1 / max(fmr, 1e-12))):,} comparisons "
        f"(calibrated FMR {fmr:.3g}); the laxest allowed without force_thresholds is {limit:.4f} (FMR "
        f"{MAX_OVERRIDE_FMR:g}). Prefer target_fmr / target_fpir.",
        code="threshold_too_lax",
    )


@dataclass(frozen=True)
class GallerySize:
    attendees: int
    templates: int


async def gallery_size(session: AsyncSession, event_id: object) -> GallerySize:
    row = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(Attendee.templates), 0)).where(Attendee.event_id == event_id)
        )
    ).one()
    return GallerySize(attendees=int(row[0]), templates=int(row[1]))


async def gallery_sizes(session: AsyncSession, event_ids: list[object]) -> dict[object, GallerySize]:
    rows = (
        await session.execute(
            select(Attendee.event_id, func.count(), func.coalesce(func.sum(Attendee.templates), 0))
            .where(Attendee.event_id.in_(event_ids))
            .group_by(Attendee.event_id)
        )
    ).all()
    return {r[0]: GallerySize(attendees=int(r[1]), templates=int(r[2])) for r in rows}


def _one_in(rate: float) -> str:
    return "none" if rate <= 0 else f"1 in {max(1, round(1 / rate)):,}"


def expected_rates(event: Event, size: GallerySize) -> ExpectedRates:
    """What the event's thresholds are expected to do at its current size, on photos like the calibration set's
    (unconstrained news photos: cooperative gate captures do better on the genuine side)."""
    cal = calibration_of(event)
    n = max(size.templates, 1)
    t_identify = identify_threshold(event, size.templates, size.attendees)
    margin_share = cal.margin_factor(size.attendees) if event.identify_margin is None else 1.0
    fpir = min(1.0, cal.fpir(t_identify, n) * margin_share)
    lo, hi = cal.fpir_interval(t_identify, n)
    per_attendee = size.templates / size.attendees if size.attendees else 1.0
    fnir = cal.fnmr(t_identify, per_attendee)
    # 1:1 as the gate decides it for a typical attendee here: any of their templates can admit an impostor.
    held = max(1, round(per_attendee))
    t_verify = verify_threshold(event, held)
    fmr, fnmr = 1.0 - (1.0 - min(cal.fmr(t_verify), 1.0)) ** held, cal.fnmr(t_verify, per_attendee)
    summary = (
        f"1:K at {size.attendees:,} attendees ({size.templates:,} templates): about {_one_in(fpir)} strangers "
        f"admitted; about {fnir:.0%} of attendees will need their ticket. 1:1: about {_one_in(fmr)} impostors "
        f"holding a stolen ticket admitted; about {fnmr:.0%} of genuine holders refused."
    )
    return ExpectedRates(
        attendees=size.attendees,
        templates=size.templates,
        identify_fpir=fpir,
        identify_fpir_interval=(lo * margin_share, hi * margin_share),
        identify_fnir=fnir,
        verify_fmr=fmr,
        verify_fnmr=fnmr,
        summary=summary,
    )
