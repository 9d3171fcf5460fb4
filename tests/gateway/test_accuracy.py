"""End to end through the gateway at the model's default thresholds: how many genuine attendees are admitted,
how many impostors and strangers are let in. Loose bounds (the dev set is small); the counts are printed
(`pytest -s`) and attached to the test report."""

from __future__ import annotations

from collections import Counter

from tests.gateway.conftest import Faces, enrol, identify, verify

# identity -> (enrolled photos, held-back probe photos)
PEOPLE = {
    "Ariel_Sharon": ((1, 2), (3, 6)),
    "Colin_Powell": ((1, 2), (4, 5)),
    "Tony_Blair": ((2, 3), (4, 6)),
    "Angelina_Jolie": ((1, 2), (5, 6)),
    "Hugo_Chavez": ((1, 2), (4, 5)),
    "Gerhard_Schroeder": ((1, 2), (5, 6)),
    "Vladimir_Putin": ((2, 3), (5, 6)),
    "Jerry_Seinfeld": ((1, 3), (5, 6)),
}
STRANGERS = [("Madonna", 1), ("Mindy_Kaling", 1), ("Kit_Harington", 1), ("Alex_Lacamoire", 1), ("Elton_John", 1)]


async def test_default_thresholds_end_to_end(new_tenant, faces: Faces, record_property, unthrottled: None) -> None:
    t = await new_tenant(name="accuracy", allow_reentry=True)
    ids = {}
    for person, (enrolled, _) in PEOPLE.items():
        r = await enrol(
            t.org, t.event_id, name=person, ticket=person, photos=[faces.photo(person, n) for n in enrolled]
        )
        assert r.status_code == 201, r.text
        ids[person] = r.json()["attendee"]["id"]
    counts: Counter[str] = Counter()
    people = list(PEOPLE)
    for i, person in enumerate(people):
        for n in PEOPLE[person][1]:
            body = (await verify(t.gate, person, faces.photo(person, n))).json()
            counts[f"verify_genuine_{body['decision']}"] += 1
        # an impostor: the next person's face on this person's ticket
        other = people[(i + 1) % len(people)]
        body = (await verify(t.gate, person, faces.photo(other, PEOPLE[other][1][0]))).json()
        counts[f"verify_impostor_{body['decision']}"] += 1
        body = (await identify(t.gate, faces.photo(person, PEOPLE[person][1][1]))).json()
        right = body["decision"] == "admit" and body["attendee_id"] == ids[person]
        counts["identify_genuine_" + ("correct" if right else body["decision"])] += 1
    for person, n in STRANGERS:
        body = (await identify(t.gate, faces.photo(person, n))).json()
        counts[f"identify_stranger_{body['decision']}"] += 1
    log = (await t.org.get(f"/v1/events/{t.event_id}/log", params={"limit": 500})).json()["items"]
    latencies = sorted(e["latency_ms"] for e in log)
    counts["latency_p50_ms"] = round(latencies[len(latencies) // 2])
    counts["latency_max_ms"] = round(latencies[-1])
    summary = dict(sorted(counts.items()))
    print("\ngateway e2e counts at default thresholds:", summary)
    record_property("e2e_counts", summary)
    genuine = 2 * len(PEOPLE)
    assert counts["verify_genuine_admit"] >= 0.75 * genuine, summary
    assert counts["verify_impostor_admit"] <= 1, summary
    assert counts["identify_genuine_correct"] >= 0.75 * len(PEOPLE), summary
    assert counts["identify_stranger_admit"] <= 1, summary
