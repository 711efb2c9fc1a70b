#!/usr/bin/env python3
"""Synthetic Patients for the peer benchmark (scripts/bench-peers.sh) and the string-modifier
rows of the search benchmark: N patients, each with a kanji name (family and given) and its
katakana reading, like the patients of a Japanese hospital, and a romanised name. Family names
are drawn from 1,600 synthetic surnames (two kanji of 40 with their readings) so that an exact
family name matches ~60 of 100k patients, as a common real surname does. Deterministic (seeded).

Usage: scripts/gen-patients.py N OUT.ndjson [VALUES.txt]
  VALUES.txt receives the query values the load scripts draw from, one `kind<TAB>value` per line:
  `family` (kanji surnames in use), `kana` (their katakana), `roman` (romanised surnames),
  `contains` (3-character pieces of romanised surnames), `id` (patient ids).
"""
import json
import random
import sys

n = int(sys.argv[1])
out = open(sys.argv[2], "w", encoding="utf-8")
rnd = random.Random(20261206)
# Kanji with a katakana reading and a romanisation.
K = [("山", "ヤマ", "yama"), ("田", "ダ", "da"), ("川", "カワ", "kawa"), ("中", "ナカ", "naka"), ("村", "ムラ", "mura"),
     ("木", "キ", "ki"), ("本", "モト", "moto"), ("井", "イ", "i"), ("石", "イシ", "ishi"), ("松", "マツ", "matsu"),
     ("小", "コ", "ko"), ("大", "オオ", "oo"), ("高", "タカ", "taka"), ("橋", "ハシ", "hashi"), ("藤", "フジ", "fuji"),
     ("原", "ハラ", "hara"), ("野", "ノ", "no"), ("森", "モリ", "mori"), ("島", "シマ", "shima"), ("上", "ウエ", "ue"),
     ("西", "ニシ", "nishi"), ("東", "ヒガシ", "higashi"), ("北", "キタ", "kita"), ("岡", "オカ", "oka"), ("沢", "サワ", "sawa"),
     ("林", "ハヤシ", "hayashi"), ("池", "イケ", "ike"), ("谷", "タニ", "tani"), ("崎", "サキ", "saki"), ("浜", "ハマ", "hama"),
     ("千", "チ", "chi"), ("葉", "バ", "ba"), ("宮", "ミヤ", "miya"), ("坂", "サカ", "saka"), ("竹", "タケ", "take"),
     ("内", "ウチ", "uchi"), ("平", "ヒラ", "hira"), ("久", "ヒサ", "hisa"), ("長", "ナガ", "naga"), ("福", "フク", "fuku")]
GIVEN = [("太郎", "タロウ", "Taro"), ("花子", "ハナコ", "Hanako"), ("一郎", "イチロウ", "Ichiro"), ("美咲", "ミサキ", "Misaki"),
         ("翔", "ショウ", "Sho"), ("陽菜", "ヒナ", "Hina"), ("健", "ケン", "Ken"), ("結衣", "ユイ", "Yui"), ("大輔", "ダイスケ", "Daisuke"),
         ("由美", "ユミ", "Yumi"), ("誠", "マコト", "Makoto"), ("愛", "アイ", "Ai")]
surnames = [(a[0] + b[0], a[1] + b[1], (a[2] + b[2]).capitalize()) for a in K for b in K]
used = set()
ids = []
for i in range(n):
    f, g = rnd.choice(surnames), rnd.choice(GIVEN)
    used.add(f)
    pid = f"pt{i:07d}"
    ids.append(pid)
    p = {
        "resourceType": "Patient", "id": pid,
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": f"{i:08d}"}],
        "name": [
            {"use": "official", "family": f[0], "given": [g[0]]},
            {"use": "usual", "family": f[1], "given": [g[1]]},
            {"use": "nickname", "family": f[2], "given": [g[2]]},
        ],
        "gender": rnd.choice(["male", "female"]),
        "birthDate": f"{rnd.randint(1930, 2020)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
    }
    out.write(json.dumps(p, ensure_ascii=False) + "\n")
out.close()
if len(sys.argv) > 3:
    with open(sys.argv[3], "w", encoding="utf-8") as v:
        for f in sorted(used):
            v.write(f"family\t{f[0]}\nkana\t{f[1]}\nroman\t{f[2]}\n")
            piece = f[2].lower()[1:4]
            if len(piece) == 3:
                v.write(f"contains\t{piece}\n")
        for pid in rnd.sample(ids, min(len(ids), 5000)):
            v.write(f"id\t{pid}\n")
