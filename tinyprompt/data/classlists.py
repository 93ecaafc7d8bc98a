"""Class lists of the multi-label benchmarks, with the synonyms that mark each class in a caption.

TaI-DPT ("Texts as Images in Prompt Tuning for Multi-Label Image Recognition", arXiv 2211.12739)
trains on captions only: a caption's labels are the classes whose names (or synonyms) occur in it
(`tinyprompt.data.captions`). This file holds, per benchmark, the class names used in the prompts and
a synonym list per class. The lists are tinyprompt's own; they follow the documented behaviour of
the official lists (person <- person/people/human/man/woman/passenger but not boy/girl/player; bare
"table" is a dining table; "coach" is a bus; "ball", "tennis", "baseball" are a COCO sports ball;
"way" and "path" are a NUS road, "ice" a glacier; VOC "bench" is a chair). A multi-word synonym (a
compound such as "motor bike") also matches its space-stripped form ("motorbike").

A user synonym file replaces the built-in lists (`load_synonym_file`): either JSON
`{"class name": ["synonym", ...], ...}` (order = class order) or text lines `class name: syn, syn`.
"""
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClassList", "CLASS_LISTS", "get_class_list", "load_synonym_file"]


@dataclass(frozen=True)
class ClassList:
    """Class names for the prompts and, per class, the words/phrases that mark it in a caption."""

    name: str
    classnames: tuple  # (C,) names put into the prompts, in label order
    synonyms: tuple  # (C,) tuples; the class name itself is always one of them

    def __post_init__(self):
        if len(self.classnames) != len(self.synonyms) or not self.classnames:
            raise ValueError(
                f"class list {self.name!r}: {len(self.classnames)} class names but {len(self.synonyms)} "
                "synonym lists; give one (non-empty) synonym list per class"
            )
        if len(set(self.classnames)) != len(self.classnames):
            dup = sorted({c for c in self.classnames if self.classnames.count(c) > 1})
            raise ValueError(f"class list {self.name!r} repeats class names {dup}; class names must be unique")

    def __len__(self) -> int:
        return len(self.classnames)

    def align(self, names, source: str = "the evaluation data") -> list:
        """Index into this list of every name in `names` (a class name or one of its synonyms)."""
        lookup = {}
        for idx, (cls, syns) in enumerate(zip(self.classnames, self.synonyms)):
            for s in (cls, *syns):
                for key in (s.lower(), s.lower().replace("_", " "), s.lower().replace(" ", "")):
                    lookup.setdefault(key, idx)
        order, unknown = [], []
        for n in names:
            key = n.lower().replace("_", " ")
            idx = lookup.get(key, lookup.get(key.replace(" ", "")))
            (unknown.append(n) if idx is None else order.append(idx))
        if unknown:
            raise ValueError(
                f"{source} names classes {unknown} that are not in class list {self.name!r} (nor synonyms of "
                f"its classes); use a class list or synonym file that contains them"
            )
        if len(set(order)) != len(order):
            raise ValueError(f"{source} maps two class names onto one class of {self.name!r}: {list(names)}")
        return order


def _build(name: str, table: str) -> ClassList:
    """One class per line: `class name: synonym, synonym, ...` (the class name is added as a synonym)."""
    classnames, synonyms = [], []
    for line in table.strip().splitlines():
        cls, _, rest = line.partition(":")
        cls = cls.strip()
        syns = [s.strip() for s in rest.split(",") if s.strip()]
        classnames.append(cls)
        synonyms.append(tuple(dict.fromkeys([cls, *syns])))
    return ClassList(name, tuple(classnames), tuple(synonyms))


_PERSON = "person, people, human, man, woman, passenger"
_AEROPLANE = "aeroplane, airplane, air plane, aircraft, air craft, plane, jet, airliner"
_BUS = "bus, coach, minibus, motor bus, motor coach, double decker, trolleybus"
_MOTORBIKE = "motor bike, motorbike, motor cycle, motorcycle, scooter, moped"
_BOAT = "boat, ship, yacht, sailboat, canoe, kayak, ferry"

# PASCAL VOC 2007: the prompt names are the dataset's own ("diningtable", "tvmonitor", ...)
VOC2007 = _build(
    "voc2007",
    f"""
aeroplane: {_AEROPLANE}
bicycle: bicycle, bike, cycle
bird: bird, pigeon, seagull, gull, duck, goose, parrot, owl, eagle, swan
boat: {_BOAT}
bottle: bottle
bus: {_BUS}
car: car, taxi, cab, automobile, motor car, sedan, jeep
cat: cat, kitten, kitty
chair: chair, armchair, arm chair, bench, stool
cow: cow, cattle, bull, calf, ox
diningtable: table, dining table, dinner table, kitchen table
dog: dog, puppy, pup
horse: horse, pony, foal
motorbike: {_MOTORBIKE}
person: {_PERSON}
pottedplant: potted plant, pot plant, house plant, houseplant, flowerpot
sheep: sheep, lamb
sofa: sofa, couch
train: train, locomotive, tram, railway, rail way
tvmonitor: tvmonitor, tv, television, monitor
""",
)

# MS-COCO 2014 (80 classes in category-id order); the prompt names are TaI-DPT's ("motor bike", ...)
COCO = _build(
    "coco",
    f"""
person: {_PERSON}
bicycle: bicycle, bike, cycle
car: car, taxi, cab, automobile, motor car, sedan, jeep
motor bike: {_MOTORBIKE}
aeroplane: {_AEROPLANE}
bus: {_BUS}
train: train, locomotive, tram, railway, rail way
truck: truck, lorry, pickup truck, fire truck, firetruck
boat: {_BOAT}
traffic light: traffic light, stoplight, stop light, traffic signal
fire hydrant: fire hydrant, hydrant
stop sign: stop sign, halt sign
parking meter: parking meter, meter
bench: bench
bird: bird, pigeon, seagull, gull, duck, goose, parrot, owl, eagle, swan
cat: cat, kitten, kitty
dog: dog, puppy, pup
horse: horse, pony, foal
sheep: sheep, lamb
cow: cow, cattle, bull, calf, ox
elephant: elephant
bear: bear, polar bear, grizzly
zebra: zebra
giraffe: giraffe
backpack: backpack, back pack, rucksack, knapsack
umbrella: umbrella, parasol
handbag: handbag, hand bag, purse
tie: tie, necktie, bow tie
suitcase: suitcase, luggage, baggage
frisbee: frisbee
skis: skis, ski
snowboard: snowboard
sports ball: sports ball, sport ball, ball, football, soccer, tennis, basketball, baseball, volleyball, softball
kite: kite
baseball bat: baseball bat
baseball glove: baseball glove, baseball mitt, mitt
skateboard: skateboard, skate board
surfboard: surfboard, surf board
tennis racket: tennis racket, tennis racquet, racket, racquet
bottle: bottle
wine glass: wine glass, goblet
cup: cup, mug
fork: fork
knife: knife
spoon: spoon
bowl: bowl
banana: banana
apple: apple
sandwich: sandwich, burger, hamburger
orange: orange
broccoli: broccoli
carrot: carrot
hot dog: hot dog, frankfurter
pizza: pizza
donut: donut, doughnut
cake: cake, cupcake
chair: chair, armchair, arm chair, stool
couch: couch, sofa
potted plant: potted plant, pot plant, house plant, flowerpot
bed: bed
dining table: dining table, dinner table, kitchen table, table
toilet: toilet
tv: tv, television, monitor
laptop: laptop
mouse: mouse
remote: remote, remote control
keyboard: keyboard
cell phone: cell phone, mobile phone, phone, smartphone
microwave: microwave
oven: oven, stove
toaster: toaster
sink: sink
refrigerator: refrigerator, fridge, freezer
book: book
clock: clock
vase: vase
scissors: scissors
teddy bear: teddy bear, teddy
hair drier: hair drier, hair dryer, blow dryer
toothbrush: toothbrush, tooth brush
""",
)

# NUS-WIDE: the 81 concepts of Concepts81.txt, in that order
NUS_WIDE = _build(
    "nuswide",
    f"""
airport: airport, air port, airfield, air field, runway
animal: animal, wildlife
beach: beach, seashore
bear: bear
birds: birds, bird
boats: boats, {_BOAT}
book: book
bridge: bridge
buildings: buildings, skyscraper
cars: cars, car, taxi, automobile
castle: castle, palace, fortress
cat: cat, kitten
cityscape: cityscape, city, skyline
clouds: clouds, cloudy
computer: computer, laptop
coral: coral, reef
cow: cow, cattle, calf
dancing: dancing, dance, dancer
dog: dog, puppy
earthquake: earthquake, rubble, collapsed building, broken building
elk: elk, deer, moose
fire: fire, flame, bonfire
fish: fish
flags: flags
flowers: flowers, blossom
food: food, meal, dinner, lunch, breakfast
fox: fox
frost: frost, frosty
garden: garden
glacier: glacier, ice, iceberg
grass: grass, lawn, meadow
harbor: harbor, harbour, port, marina, dock
horses: horses, pony
house: house, cottage, cabin, hut
lake: lake, pond
leaf: leaf, leaves, foliage
map: map
military: military, soldier, army
moon: moon
mountain: mountain, hill
nighttime: nighttime, night time, night
ocean: ocean, sea
person: {_PERSON}
plane: plane, airplane, aeroplane, aircraft, air plane, jet
plants: plants, shrub, bush
police: police, policeman, cop
protest: protest, protester, demonstration
railroad: railroad, rail road, railway, rail way
rainbow: rainbow
reflection: reflection
road: road, path, way, highway, pathway
rocks: rocks, stone, boulder
running: running, run, runner, jogging
sand: sand, dune
sign: sign, signboard, billboard
sky: sky
snow: snow, snowy
soccer: soccer, football
sports: sports, athlete
statue: statue, sculpture
street: street, avenue, alley
sun: sun, sunlight, sunshine
sunset: sunset, sunrise, dusk
surf: surf, surfer, surfboard
swimmers: swimmers, swimming
tattoo: tattoo
temple: temple, shrine, pagoda
tiger: tiger
tower: tower
town: town, village
toy: toy
train: train, locomotive, tram
tree: tree, forest
valley: valley, canyon
vehicle: vehicle, truck, van, lorry, tractor
water: water
waterfall: waterfall
wedding: wedding, bride, groom
whales: whales
window: window
zebra: zebra
""",
)

CLASS_LISTS = {"voc2007": VOC2007, "coco": COCO, "nuswide": NUS_WIDE}
_ALIASES = {"voc": "voc2007", "coco2014": "coco", "mscoco": "coco", "nus": "nuswide", "nus-wide": "nuswide"}


def load_synonym_file(path) -> ClassList:
    """A user class list: JSON {class: [synonyms]} or text lines `class name: synonym, synonym`."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"synonym file {path} is not valid JSON ({e})") from None
        if not isinstance(table, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in table.values()
        ):
            raise ValueError(f'synonym file {path} must hold one object {{"class name": ["synonym", ...], ...}}')
        lines = [f"{cls}: {', '.join(syns)}" for cls, syns in table.items()]
    else:
        lines = []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if not line.partition(":")[0].strip() or "," in line.partition(":")[0]:
                raise ValueError(f"synonym file {path} line {n}: {raw!r} is not 'class name: synonym, synonym, ...'")
            lines.append(line)
    if not lines:
        raise ValueError(f"synonym file {path} lists no classes")
    return _build(path.stem, "\n".join(lines))


def get_class_list(name_or_path) -> ClassList:
    """A built-in class list by name (voc2007, coco, nuswide, or an alias), or a user synonym file."""
    key = str(name_or_path).lower()
    key = _ALIASES.get(key, key)
    if key in CLASS_LISTS:
        return CLASS_LISTS[key]
    if Path(name_or_path).is_file():
        return load_synonym_file(name_or_path)
    choices = sorted([*CLASS_LISTS, *_ALIASES])
    raise ValueError(f"unknown class list {name_or_path!r}: use one of {choices} or the path of a synonym file")
