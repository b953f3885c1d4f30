#!/usr/bin/env python3
"""Writes the demo data config/zones.geojson and config/cell_sites.csv (deterministic).

All coordinates are APPROXIMATE, traced by hand from general knowledge of the places, not surveyed boundaries:
good enough for demos and tests, not for real warnings. Geocodes are Taiwan_Geocode_103 as best known.
Run from the workspace root:  python3 geo-index/scripts/gen_demo_data.py
"""
import json, math, random

def poly(*pts):
    ring = [list(p) for p in pts]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}

def line(*pts):
    return {"type": "LineString", "coordinates": [list(p) for p in pts]}

def zone(id, name, name_en, kind, geocode, geometry, **extra):
    props = {"id": id, "name": name, "name_en": name_en, "kind": kind}
    if geocode:
        props["geocode"] = geocode
    props.update(extra)
    return {"type": "Feature", "properties": props, "geometry": geometry}

# (lon, lat) everywhere, as GeoJSON.
ZONES = [
    zone("dfa-xinyi-shenmu", "南投縣信義鄉神木村土石流潛勢區", "Shenmu Village debris-flow area, Xinyi, Nantou",
         "debris_flow", "1000812",
         poly((120.912, 23.503), (120.930, 23.499), (120.946, 23.507), (120.950, 23.522), (120.941, 23.536),
              (120.925, 23.540), (120.911, 23.531), (120.906, 23.516)),
         thresholds={"rain_24h_mm": 250, "rain_1h_mm": 60}),
    zone("dfa-xinyi-dongpu", "南投縣信義鄉東埔村土石流潛勢區", "Dongpu Village debris-flow area, Xinyi, Nantou",
         "debris_flow", "1000812",
         poly((120.921, 23.556), (120.938, 23.553), (120.945, 23.566), (120.936, 23.578), (120.922, 23.574)),
         thresholds={"rain_24h_mm": 300}),
    zone("dfa-xinyi-tongfu", "南投縣信義鄉同富村土石流潛勢區", "Tongfu Village debris-flow area, Xinyi, Nantou",
         "debris_flow", "1000812",
         poly((120.855, 23.565), (120.872, 23.560), (120.880, 23.575), (120.868, 23.588), (120.853, 23.580)),
         thresholds={"rain_24h_mm": 350}),
    zone("dfa-jiaxian-xiaolin", "高雄市甲仙區小林里土石流潛勢區", "Xiaolin debris-flow area, Jiaxian, Kaohsiung",
         "debris_flow", "6400033",
         poly((120.637, 23.150), (120.655, 23.148), (120.662, 23.163), (120.652, 23.176), (120.636, 23.170)),
         thresholds={"rain_24h_mm": 300}),
    zone("dfa-namasia-minsheng", "高雄市那瑪夏區民生里土石流潛勢區", "Minsheng debris-flow area, Namasia, Kaohsiung",
         "debris_flow", "6400038",
         poly((120.695, 23.270), (120.713, 23.268), (120.720, 23.283), (120.708, 23.296), (120.693, 23.288)),
         thresholds={"rain_24h_mm": 350}),
    zone("reach-zhuoshui-mid", "濁水溪中游 (集集至名間/竹山)", "Zhuoshui River, middle reach (Jiji to Mingjian/Zhushan)",
         "river_reach", "10008",
         line((120.585, 23.836), (120.620, 23.829), (120.650, 23.825), (120.690, 23.815), (120.730, 23.812),
              (120.775, 23.823)),
         width_m=800, thresholds={"level_alert_m": 3.5}),
    zone("reach-keelung-neihu", "基隆河 (內湖、南港段)", "Keelung River, Neihu-Nangang reach, Taipei",
         "river_reach", "63000",
         line((121.545, 25.080), (121.565, 25.068), (121.585, 25.062), (121.605, 25.056), (121.625, 25.060)),
         width_m=200),
    zone("reach-keelung-qidu", "基隆河 (七堵、暖暖段)", "Keelung River, Qidu-Nuannuan reach, Keelung",
         "river_reach", "10017",
         line((121.680, 25.083), (121.700, 25.092), (121.715, 25.097), (121.735, 25.105)),
         width_m=120),
    zone("fwy1-changhua", "國道1號彰化路段", "Freeway 1, Changhua section",
         "road_segment", "10007",
         line((120.549, 24.020), (120.553, 24.045), (120.560, 24.070), (120.575, 24.095), (120.595, 24.118)),
         width_m=60),
    zone("fwy3-nantou", "國道3號南投至竹山路段", "Freeway 3, Nantou to Zhushan section",
         "road_segment", "10008",
         line((120.685, 23.905), (120.678, 23.870), (120.676, 23.840), (120.682, 23.810), (120.687, 23.786),
              (120.693, 23.760)),
         width_m=60),
    # Provincial Highway 21 beside the Shenmu debris-flow area (~0.4 km west of it), northbound: the traffic rules'
    # cause-and-effect demo (a landslide blocking the road). Road segments name their road and direction.
    zone("ph21-xinyi-shenmu", "台21線信義鄉神木村路段（北向）", "Provincial Highway 21, Shenmu section, Xinyi (northbound)",
         "road_segment", "1000812",
         line((120.900, 23.490), (120.903, 23.505), (120.902, 23.520), (120.905, 23.535), (120.910, 23.550)),
         width_m=40, road="台21線", road_en="Provincial Highway 21", direction="北向（往水里）",
         direction_en="northbound (towards Shuili)"),
    # An underpass that floods: a road-flood sensor at its lowest point, a vehicle detector at each end.
    zone("underpass-nantou-nangang", "南投市南崗地下道", "Nangang underpass, Nantou City", "road_segment", "1000801",
         line((120.700, 23.930), (120.7015, 23.931), (120.703, 23.932)),
         width_m=24, road="南崗路", road_en="Nangang Road", direction="雙向", direction_en="both directions"),
    zone("restricted-mailiao", "雲林麥寮六輕工業區周邊管制區", "Mailiao petrochemical complex restricted area, Yunlin",
         "restricted", "1000913",
         poly((120.165, 23.770), (120.215, 23.770), (120.222, 23.800), (120.205, 23.825), (120.170, 23.820),
              (120.160, 23.795))),
    zone("restricted-linyuan", "高雄林園石化工業區周邊管制區", "Linyuan petrochemical park restricted area, Kaohsiung",
         "restricted", "6400013",
         poly((120.380, 22.490), (120.408, 22.492), (120.412, 22.515), (120.392, 22.523), (120.377, 22.508))),
    zone("township-xinyi", "南投縣信義鄉", "Xinyi Township, Nantou County", "township", "1000812",
         poly((120.83, 23.72), (120.95, 23.70), (121.07, 23.65), (121.12, 23.55), (121.05, 23.42), (120.96, 23.45),
              (120.88, 23.45), (120.82, 23.52), (120.80, 23.62))),
    zone("township-jiaxian", "高雄市甲仙區", "Jiaxian District, Kaohsiung City", "township", "6400033",
         poly((120.57, 23.04), (120.63, 23.03), (120.67, 23.10), (120.68, 23.18), (120.64, 23.21), (120.60, 23.16),
              (120.56, 23.10))),
]

def write_zones(path):
    doc = {
        "type": "FeatureCollection",
        "description": "Demo hazard zones for disaster-cloud. All coordinates are APPROXIMATE (hand-traced, not "
                       "surveyed boundaries); lines are centre lines buffered to width_m. Geocodes are "
                       "Taiwan_Geocode_103 as best known. Thresholds are illustrative. Generated by "
                       "geo-index/scripts/gen_demo_data.py.",
        "features": ZONES,
    }
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        f.write('  "type": "FeatureCollection",\n')
        f.write('  "description": %s,\n' % json.dumps(doc["description"], ensure_ascii=False))
        f.write('  "features": [\n')
        f.write(",\n".join("    " + json.dumps(z, ensure_ascii=False) for z in ZONES))
        f.write("\n  ]\n}\n")

# Cell sites: for each demo region, a jittered triangular lattice of 3-sector sites per carrier. Spacing is
# 1.3 × range, below the √3 × range that a lattice of full circles needs to leave no gap, so regions are covered.
CARRIERS = [("Chunghwa Telecom", "92"), ("Taiwan Mobile", "97"), ("FarEasTone", "01")]
# (name, lon_min, lat_min, lon_max, lat_max, range_m)
REGIONS = [
    ("taipei-neihu", 121.535, 25.045, 121.635, 25.092, 1500),
    ("keelung-qidu", 121.670, 25.072, 121.745, 25.115, 1500),
    ("changhua", 120.535, 24.008, 120.610, 24.130, 2500),
    ("nantou-west", 120.575, 23.752, 120.790, 23.915, 3000),
    ("mailiao", 120.150, 23.760, 120.232, 23.835, 2500),
    ("linyuan", 120.370, 22.482, 120.420, 22.531, 2000),
    ("kaohsiung-hills", 120.550, 23.020, 120.730, 23.305, 4500),
    ("xinyi", 120.790, 23.410, 121.130, 23.730, 6000),
]

def write_sites(path):
    rng = random.Random(20240917)
    rows = []
    for ci, (carrier, mnc) in enumerate(CARRIERS):
        enb = 10000 + ci * 50000
        for ri, (name, x0, y0, x1, y1, r) in enumerate(REGIONS):
            tac = 0x1000 * (ci + 1) + ri + 1
            lat_c = (y0 + y1) / 2
            m_lat = 110_800.0
            m_lon = 111_320.0 * math.cos(math.radians(lat_c))
            d = 1.3 * r
            # Extend the lattice by one range beyond the region so edges are covered too.
            xs0, ys0 = x0 - r / m_lon, y0 - r / m_lat
            xs1, ys1 = x1 + r / m_lon, y1 + r / m_lat
            off = rng.random()  # carriers' lattices do not line up
            row_i = 0
            y = ys0 + off * d / m_lat
            while y <= ys1:
                x = xs0 + ((row_i % 2) * 0.5 + off) * d / m_lon
                while x <= xs1:
                    jx = rng.uniform(-0.05, 0.05) * d / m_lon
                    jy = rng.uniform(-0.05, 0.05) * d / m_lat
                    rot = rng.uniform(0, 120)
                    enb += 1
                    for cell in range(3):
                        az = (rot + 120 * cell) % 360
                        eci = enb * 256 + cell + 1
                        rows.append((carrier, "466", mnc, eci, tac, round(y + jy, 6), round(x + jx, 6),
                                     round(az, 1), 120, r))
                    x += d / m_lon
                y += d * math.sqrt(3) / 2 / m_lat
                row_i += 1
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Demo 4G cells (one row per sector) for disaster-cloud. PLAUSIBLE, NOT REAL: positions are a jittered\n")
        f.write("# lattice around the demo zones; ECIs/TACs are made up. Generated by geo-index/scripts/gen_demo_data.py.\n")
        f.write("carrier,mcc,mnc,eci,tac,lat,lon,azimuth_deg,beamwidth_deg,range_m\n")
        for r in rows:
            f.write("%s,%s,%s,%d,%d,%.6f,%.6f,%.1f,%d,%d\n" % r)
    return len(rows)

if __name__ == "__main__":
    write_zones("config/zones.geojson")
    n = write_sites("config/cell_sites.csv")
    print("zones:", len(ZONES), "cell rows:", n)
