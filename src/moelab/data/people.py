"""The knowledge half of the default world: a synthetic population with biographies and QA.

Every person has six facts (birth date, birth city, university, field of study, employer,
work city), drawn from small embedded lists so nothing is downloaded and the facts cannot be
known in advance. A person's biography is written in several paraphrases (different
sentence templates and orders) and each fact has one question, in the style of the bioS
data of *Physics of Language Models 3.1* (Allen-Zhu & Li).
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass

from moelab.errors import UserError

# ------------------------------------------------------------------ embedded lists
# Surnames are invented, so no fact about a person can come from real-world knowledge.

FEMALE_FIRST = """Ada Beatrix Clara Delia Elin Freya Greta Hana Ines Juno Kira Lena Mira Nadia Opal
Petra Quinn Rosa Selma Tova Una Vera Wren Yara Zelda Alma Bianca Cora Dara Edda Fiona Gwen Hedda
Iris Jana Karin Lotte Maren Nora Odile""".split()

MALE_FIRST = """Aldo Bram Cyril Dorian Emil Felix Gideon Hugo Ivo Jasper Kai Lukas Milo Nils Oskar
Pavel Quentin Rafael Silas Tobias Ulric Viktor Walter Xander Yusuf Zeno Anton Basil Casper Dmitri
Elias Fabian Gustav Henrik Isak Jonas Kasimir Leon Magnus Otto""".split()

LAST = """Merrow Ashgrove Belcourt Calloway Dunmore Everly Falkner Garnett Holloway Ingram Jessop
Kestrel Lindqvist Marchetti Northam Oakridge Pemberton Quillon Radcliffe Stanhope Thornbury
Underhill Vance Whitlock Yardley Zimmerly Abernathy Blackwood Carrow Delacroix Elsworth Fairholm
Greaves Hartigan Ivers Jarrow Kilbride Langley Mercer Norcross Ormsby Penhallow Quarles Rookwood
Sallow Tennant Ulverston Varga Wexley Yelland Brannock Coldwell Drummore Eastlake Fenwick
Glossop Harrowgate Kirkland Lowther Maddox Netherby Osgood Prewitt Ravensworth Selwyn Tolliver
Vantongeren Winslow Ashdown Birtwistle Cresswell Dankworth Emberton Farrant Grimshaw Hesketh
Ilsley Jowett Kettering Loxley""".split()

CITIES = """Lisbon Oslo Tallinn Porto Valencia Krakow Ghent Bergen Lyon Turin Seville Utrecht
Aarhus Graz Leipzig Bologna Riga Vilnius Dublin Cork Edinburgh Bristol Montreal Halifax Denver
Portland Austin Tucson Boise Omaha Adelaide Perth Hobart Wellington Dunedin Osaka Sapporo Busan
Nagoya Kyoto""".split()

UNIVERSITIES = [
    "Halden University", "Marlow Institute of Technology", "Ostbrook College", "Caldera University",
    "Fenmoor University", "Ravensgate College", "Thistledown University", "Alderic Institute",
    "Wexmouth University", "Brightwater College", "Kellan Polytechnic", "Silverlake University",
    "Norhaven Institute", "Greystone University", "Emberly College", "Quarry Hill University",
    "Lanford Institute of Science", "Pinecrest University", "Stormholt College", "Valemont University",
    "Ironbridge Polytechnic", "Cedarfall University", "Westmarch Institute", "Highmoor College",
]

MAJORS = [
    "marine biology", "economics", "civil engineering", "philosophy", "computer science",
    "astronomy", "linguistics", "chemistry", "architecture", "music theory", "geology",
    "statistics", "art history", "mechanical engineering", "psychology", "mathematics",
    "journalism", "botany", "political science", "materials science", "anthropology",
    "nursing", "urban planning", "physics",
]

EMPLOYERS = [
    "Corvel Systems", "Brightline Foods", "Tessaract Labs", "Northwind Shipping", "Auralis Media",
    "Quillfeather Press", "Granitehold Bank", "Lumen Grid Energy", "Vireo Pharmaceuticals",
    "Copperleaf Design", "Halcyon Aerospace", "Mosswood Furniture", "Pellucid Optics",
    "Stonebridge Insurance", "Tidewater Logistics", "Verdant Farms", "Blue Heron Software",
    "Cobalt Forge Robotics", "Driftwood Hotels", "Evergrain Bakeries", "Foxglove Clinics",
    "Gullwing Motors", "Ironbark Construction", "Juniper Telecom", "Kestrel Analytics",
    "Larkspur Textiles", "Meridian Water", "Nimbus Cloudworks",
]

MONTHS = """January February March April May June July August September October November
December""".split()

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer", "work_city")

# Biography sentence templates, several wordings per fact. {S}: subject (full name or
# pronoun), {P}: possessive (full name + 's or pronoun), {p}: lower-case possessive pronoun.
BIO_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_date": (
        "{S} was born on {v}.",
        "{S} came into the world on {v}.",
        "{P} date of birth is {v}.",
        "{P} birth was recorded on {v}.",
    ),
    "birth_city": (
        "{S} was born in {v}.",
        "{S} spent {p} early years in {v}.",
        "{P} hometown is {v}.",
        "{S} is a native of {v}.",
        "{S} grew up in {v}.",
    ),
    "university": (
        "{S} studied at {v}.",
        "{S} graduated from {v}.",
        "{S} received {p} education at {v}.",
        "{S} attended {v}.",
    ),
    "major": (
        "{S} majored in {v}.",
        "{S} focused on {v} during {p} studies.",
        "{P} field of study was {v}.",
        "{S} earned a degree in {v}.",
    ),
    "employer": (
        "{S} works for {v}.",
        "{S} is employed by {v}.",
        "{P} employer is {v}.",
        "{S} has a job at {v}.",
    ),
    "work_city": (
        "{S} works in {v}.",
        "{P} office is in {v}.",
        "{S} is based in {v} for work.",
        "{S} commutes to an office in {v}.",
    ),
}

QUESTIONS: dict[str, str] = {
    "birth_date": "When was {name} born?",
    "birth_city": "Where was {name} born?",
    "university": "Which university did {name} attend?",
    "major": "What did {name} study?",
    "employer": "Which company does {name} work for?",
    "work_city": "In which city does {name} work?",
}


@dataclass(frozen=True)
class Person:
    name: str
    female: bool
    facts: dict[str, str]  # attribute -> value, keys are ATTRIBUTES


def max_people() -> int:
    """How many people with unique full names the embedded lists can make."""
    return (len(FEMALE_FIRST) + len(MALE_FIRST)) * len(LAST)


def make_people(num_people: int, rng: random.Random) -> list[Person]:
    """Draw ``num_people`` people with unique full names and independent random facts."""
    if num_people > max_people():
        raise UserError(f"data.world.num_people={num_people} exceeds the {max_people()} unique names available")
    firsts = [(f, True) for f in FEMALE_FIRST] + [(m, False) for m in MALE_FIRST]
    # Sampling indices into the name grid without replacement keeps full names unique.
    picks = rng.sample(range(len(firsts) * len(LAST)), num_people)
    people = []
    for pick in picks:
        first, female = firsts[pick // len(LAST)]
        month = rng.randrange(12)
        facts = {
            "birth_date": f"{MONTHS[month]} {rng.randint(1, 28)}, {rng.randint(1950, 2004)}",
            "birth_city": rng.choice(CITIES),
            "university": rng.choice(UNIVERSITIES),
            "major": rng.choice(MAJORS),
            "employer": rng.choice(EMPLOYERS),
            "work_city": rng.choice(CITIES),
        }
        people.append(Person(name=f"{first} {LAST[pick % len(LAST)]}", female=female, facts=facts))
    return people


def biographies(person: Person, num_paraphrases: int, rng: random.Random,
                attributes: tuple[str, ...] = ATTRIBUTES) -> list[str]:
    """``num_paraphrases`` biographies of one person (its ``attributes`` only), each a different
    wording and fact order.

    Paraphrase k uses template ``(offset + k) % n`` for every fact, so consecutive paraphrases
    never share a wording; the fact order is shuffled independently for each one.
    """
    pronoun, possessive = ("She", "her") if person.female else ("He", "his")
    offsets = {attr: rng.randrange(len(BIO_TEMPLATES[attr])) for attr in ATTRIBUTES}
    bios = []
    for k in range(num_paraphrases):
        order = [a for a in ATTRIBUTES if a in attributes]
        rng.shuffle(order)
        sentences = []
        for i, attr in enumerate(order):
            templates = BIO_TEMPLATES[attr]
            template = templates[(offsets[attr] + k) % len(templates)]
            # The first sentence names the person; later ones refer back with a pronoun.
            subject = person.name if i == 0 else pronoun
            owner = f"{person.name}'s" if i == 0 else possessive.capitalize()
            sentences.append(template.format(S=subject, P=owner, p=possessive, v=person.facts[attr]))
        bios.append(" ".join(sentences))
    return bios


def qa_pairs(person: Person, attributes: tuple[str, ...] = ATTRIBUTES) -> list[tuple[str, str, str]]:
    """(attribute, question, answer value) for each of the person's facts among ``attributes``."""
    return [(attr, QUESTIONS[attr].format(name=person.name), person.facts[attr])
            for attr in ATTRIBUTES if attr in attributes]


_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """Case-folded text without punctuation or repeated whitespace (for exact-match scoring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _PUNCT.sub(" ", text.replace("_", " "))
    return " ".join(text.split())


def first_line(text: str) -> str:
    """The first non-empty line of a prediction (models often start with a space or newline)."""
    return text.strip().split("\n", 1)[0] if text.strip() else ""


def score_exact_match(prediction: str, gold: str) -> float:
    """1.0 when the prediction's first line equals the gold answer after normalisation."""
    return float(normalize_answer(first_line(prediction)) == normalize_answer(gold))

