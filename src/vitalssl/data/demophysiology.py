"""The demo's physiology: what each synthetic case's waveforms and labels carry, by a stated model.

The demo is the project's test bench, so its labels fall in two groups.

Positive controls (the waveforms carry them):

* **Blood pressure.** Each case has a mean arterial pressure (MAP) trajectory on
  a 1 s grid: a baseline of 75-100 mmHg, a slow drift of 2-6 mmHg, a
  post-induction dip of 5-20 mmHg that sets in over about 15 s and recovers
  with a time constant of 1-3 min, and hypotensive episodes (on average
  ``EPISODES_PER_MIN`` per minute, 1-3 min long, MAP pulled to 52-62 mmHg with
  20 s raised-cosine edges). The pulse pressure is a per-case value that widens
  with age past 45 (0.5 mmHg per year, the isolated-systolic pattern of
  Franklin et al. 1997) and scales with MAP; SBP = MAP + 2/3 PP and
  DBP = MAP - 1/3 PP. The pulse arrival time (PAT, R peak to PPG foot) is the
  pre-ejection period (60-100 ms) plus the transit time L / PWV, and shortens
  by ``PAT_MS_PER_MMHG`` ms per mmHg of MAP above the case's baseline (the
  order of the slopes in the cuffless-BP literature, Mukkamala et al. 2015).
  Vascular tone: the finger PPG amplitude falls by ``AMP_PER_MMHG`` (1.5%) per
  mmHg of MAP above baseline, and the reflected wave grows by 0.008 of the
  systolic wave per mmHg (vasoconstriction raises the reflection index,
  Millasseau et al. 2002).
* **Respiration.** A ventilator rate of 10-16 breaths/min, in half the cases
  changed once by 2-4 breaths/min, drives respiratory sinus arrhythmia in the
  beat intervals (1-4 bpm), the PPG pulse amplitude (12%) and the PPG baseline
  (1-3 units).
* **Age** (case level). Arteries stiffen: the pulse wave velocity is
  4 + 0.09 (age - 20) m/s (the slope of the Reference Values for Arterial
  Stiffness Collaboration 2010), so PAT shortens; the reflected wave comes
  earlier (the stiffness index height / dt is 5 + 0.08 (age - 20) m/s,
  Millasseau et al. 2002), larger (reflection index +0.005 per year) and wider,
  so the dicrotic notch is less distinct.
* **ASA >= 3 and ICU admission** (case level) rise with age by the logistic
  models ``ASA3_LOGIT`` and ``ICU_LOGIT``; they reach the waveforms only
  through age.

Negative controls (independent of the waveforms): sex, SpO2 (98 +- 0.8%) and
BIS (a per-case level of 38-55 with a slow swing).

Heart rate is a per-case level of 55-95 bpm with slow drift, RSA and beat
jitter; the HR numeric is the instantaneous rate of the beats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SRATE = 500.0

EPISODES_PER_MIN = 0.15      # hypotensive episodes per minute of recording (Poisson)
EPISODE_EDGE_S = 20.0        # raised-cosine onset and offset of an episode
PAT_MS_PER_MMHG = 1.0        # PAT shortening per mmHg of MAP above the case's baseline
AMP_PER_MMHG = 0.015         # relative PPG amplitude fall per mmHg of MAP above baseline
RI_PER_MMHG = 0.008          # reflection index rise per mmHg of MAP above baseline
ASA3_LOGIT = (-5.0, 0.06)    # logit P(ASA >= 3) = a + b * age
ICU_LOGIT = (-4.0, 0.035)    # logit P(ICU admission) = a + b * age
RUNOFF, RUNOFF_TAU_S = 0.35, 0.6   # diastolic runoff: its height relative to the systolic wave, time constant
TEMPLATE_S = 3.0             # length of one pulse's template, s


@dataclass
class CaseSignals:
    """One case's clean signals at ``SRATE`` and what the fault injection needs to imitate them."""
    ppg: np.ndarray            # [n] arbitrary units (pulses + level + baseline modulation + noise)
    ecg: np.ndarray            # [n] mV
    beats: np.ndarray          # [k] R-peak times, s
    own_pulses: np.ndarray     # [n] the PPG pulses alone
    pulse_amp: float           # the case's systolic-wave amplitude
    pulses: object             # pulses(beat_times, pat_s) -> [n]: this case's pulse shape at other beats
    numerics: tuple            # (tn [m] s, {key: [m]}) numeric tracks every 2 s


def _logistic(a: float, b: float, x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-(a + b * x))))


def clinical_draws(rng, age: float) -> dict:
    """ASA class and ICU days of one case, by the logistic models in age."""
    asa3 = rng.random() < _logistic(*ASA3_LOGIT, age)
    asa = (3 if rng.random() < 0.85 else 4) if asa3 else (1 if rng.random() < 0.4 else 2)
    icu = rng.random() < _logistic(*ICU_LOGIT, age)
    return {"asa": asa, "icu_days": int(1 + rng.poisson(1.0)) if icu else 0}


def _gauss(t, mu, sigma):
    return np.exp(-0.5 * ((t - mu) / sigma) ** 2)


def _plateau(t: np.ndarray, start: float, end: float, edge: float) -> np.ndarray:
    """0 outside [start, end], 1 inside it past raised-cosine ramps of ``edge`` s."""
    up = np.clip((t - start) / edge, 0, 1)
    down = np.clip((end - t) / edge, 0, 1)
    return 0.5 * (1 - np.cos(np.pi * np.minimum(up, down)))


def map_trajectory(rng, tg: np.ndarray, duration: float) -> tuple[float, np.ndarray]:
    """``(baseline, MAP on the grid tg)``, mmHg: baseline, drift, post-induction dip, hypotensive episodes."""
    base = rng.uniform(75, 100)
    m = base + rng.uniform(2, 6) * np.sin(2 * np.pi * tg / rng.uniform(200, 900) + rng.uniform(0, 2 * np.pi))
    onset, depth, tau = rng.uniform(20, 90), rng.uniform(5, 20), rng.uniform(60, 180)
    after = np.clip(tg - onset, 0, None)
    m = m - depth * (1 - np.exp(-after / 15.0)) * np.exp(-after / tau)
    for _ in range(rng.poisson(EPISODES_PER_MIN * duration / 60)):
        length = rng.uniform(60, 180)
        start = rng.uniform(0, max(duration - length, 1))
        target = rng.uniform(52, 62)
        m = m + _plateau(tg, start, start + length, EPISODE_EDGE_S) * (target - m)
    return base, m


def rr_trajectory(rng, tg: np.ndarray, duration: float) -> np.ndarray:
    """Ventilator rate on the grid tg, breaths/min: a level, in half the cases one change."""
    rr = np.full(len(tg), rng.uniform(10, 16))
    if rng.random() < 0.5:
        at, step = rng.uniform(0.2, 0.8) * duration, rng.choice([-1.0, 1.0]) * rng.uniform(2, 4)
        rr = rr + step * 0.5 * (1 + np.tanh((tg - at) / 10.0))
    return rr


def resp_phase(rng, tg: np.ndarray, rr: np.ndarray) -> np.ndarray:
    """Respiratory phase (radians) on the grid tg: the integral of the rate."""
    dphi = 2 * np.pi * 0.5 * (rr[1:] + rr[:-1]) / 60.0 * np.diff(tg)
    return rng.uniform(0, 2 * np.pi) + np.concatenate([[0.0], np.cumsum(dphi)])


def beat_times(rng, duration: float, hr0: float | None = None, phase=None) -> np.ndarray:
    """R-peak times (s): a heart rate with slow drift, RSA at the respiratory ``phase(t)`` and jitter.

    Without ``phase`` a fixed 0.18-0.3 Hz breathing is drawn (another patient's beats).
    """
    hr0 = rng.uniform(55, 95) if hr0 is None else hr0
    drift_amp, drift_period = rng.uniform(2, 8), rng.uniform(120, 600)
    rsa_amp = rng.uniform(1, 4)
    if phase is None:
        f = rng.uniform(0.18, 0.3)
        phase = lambda t: 2 * np.pi * f * t  # noqa: E731
    t, beats = rng.uniform(0, 0.5), []
    while t < duration:
        beats.append(t)
        hr = (hr0 + drift_amp * np.sin(2 * np.pi * t / drift_period) + rsa_amp * np.sin(phase(t))
              + rng.normal(0, 1.0))
        t += 60.0 / max(hr, 35.0)
    return np.asarray(beats)


def ecg_template(fs: float) -> np.ndarray:
    """One P-QRS-T complex, R peak at index ``int(0.3 * fs)``, amplitude in units of the R wave."""
    t = np.arange(-0.3, 0.55, 1 / fs)
    waves = [(-0.20, 0.025, 0.12), (-0.035, 0.010, -0.12), (0.0, 0.011, 1.0),
             (0.035, 0.012, -0.28), (0.26, 0.045, 0.30)]
    return sum(a * _gauss(t, mu, s) for mu, s, a in waves)


def place(signal: np.ndarray, template: np.ndarray, starts: np.ndarray, amps: np.ndarray) -> None:
    """Add ``amps[i] * template`` at sample ``starts[i]`` (clipped at the signal's ends)."""
    n, m = len(signal), len(template)
    for s, a in zip(starts, amps):
        lo, hi = max(s, 0), min(s + m, n)
        if hi > lo:
            signal[lo:hi] += a * template[lo - s: hi - s]


@dataclass(frozen=True)
class Arteries:
    """One case's arterial parameters, from age (see the module docstring)."""
    pep_s: float          # pre-ejection period
    path_m: float         # heart-to-finger path length
    pwv: float            # pulse wave velocity, m/s
    reflect_dt_s: float   # systolic peak to reflected-wave peak
    reflect_sigma_s: float
    ri0: float            # reflection index at the case's baseline MAP
    pp0: float            # pulse pressure at the case's baseline MAP, mmHg

    @classmethod
    def draw(cls, rng, age: float) -> "Arteries":
        years = age - 20.0
        si = 5.0 + 0.08 * years + rng.normal(0, 0.3)            # stiffness index, m/s
        return cls(pep_s=rng.uniform(0.06, 0.10), path_m=rng.uniform(0.80, 0.95),
                   pwv=max(4.0 + 0.09 * years + rng.normal(0, 0.4), 3.5),
                   reflect_dt_s=rng.uniform(1.55, 1.90) / max(si, 3.0),
                   reflect_sigma_s=0.07 + 0.0007 * years, ri0=0.30 + 0.005 * years,
                   pp0=max(35.0 + 0.5 * max(age - 45.0, 0.0) + rng.normal(0, 4), 20.0))

    @property
    def pat0_s(self) -> float:
        return self.pep_s + self.path_m / self.pwv


def runoff(t: np.ndarray) -> np.ndarray:
    """The Windkessel runoff of one pulse: rises with the systolic wave, then decays with ``RUNOFF_TAU_S``.

    Summed over beats it makes the diastolic decline that runs to the next foot (without it a slow
    heart leaves a level trough between pulses, which reads as a clipped floor). The last 0.5 s of
    the template taper to 0.
    """
    x = np.where(t < 0.16, _gauss(t, 0.16, 0.065), np.exp(-(t - 0.16) / RUNOFF_TAU_S))
    edge = np.clip((t[-1] - t) / 0.5, 0, 1)
    return x * 0.5 * (1 - np.cos(np.pi * edge))


def synth_signals(rng, duration: float, age: float) -> CaseSignals:
    """The clean signals and numeric tracks of one case of ``duration`` s for a subject of ``age``."""
    n = int(duration * SRATE)
    t = np.arange(n) / SRATE
    tg = np.arange(0.0, duration + 2.0, 1.0)
    base, mp = map_trajectory(rng, tg, duration)
    rr = rr_trajectory(rng, tg, duration)
    phi = resp_phase(rng, tg, rr)
    phase = lambda x: np.interp(x, tg, phi)  # noqa: E731
    beats = beat_times(rng, duration, phase=phase)
    art = Arteries.draw(rng, age)

    ecg = np.zeros(n)
    place(ecg, ecg_template(SRATE) * rng.uniform(0.7, 1.6), (beats * SRATE).astype(int) - int(0.3 * SRATE),
          1 + 0.05 * rng.standard_normal(len(beats)))
    ecg += rng.normal(0, 0.012, n)

    tp = np.arange(0.0, TEMPLATE_S, 1 / SRATE)
    systolic = _gauss(tp, 0.16, 0.065) + RUNOFF * runoff(tp)
    reflected = _gauss(tp, 0.16 + art.reflect_dt_s, art.reflect_sigma_s)
    pulse_amp = rng.uniform(15, 35)

    def pulses(bt: np.ndarray, pat) -> np.ndarray:
        """Pulses at beats ``bt`` whose feet follow them by ``pat`` (s, scalar or per beat)."""
        dm = np.interp(bt, tg, mp) - base
        amp = pulse_amp * np.clip(1 - AMP_PER_MMHG * dm, 0.5, 2.0) * (
            1 + 0.12 * np.sin(phase(bt)) + 0.03 * rng.standard_normal(len(bt)))
        ri = np.clip(art.ri0 + RI_PER_MMHG * dm, 0.15, 0.65)
        x = np.zeros(n)
        feet = ((bt + pat) * SRATE).astype(int)
        place(x, systolic, feet, amp)
        place(x, reflected, feet, amp * ri)
        return x

    pat = (art.pat0_s - PAT_MS_PER_MMHG * 1e-3 * (np.interp(beats, tg, mp) - base)
           + rng.normal(0, 0.002, len(beats)))
    own = pulses(beats, pat)
    ppg = own + 40 + rng.uniform(1, 3) * np.sin(phase(t) + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.08, n)
    return CaseSignals(ppg, ecg, beats, own, pulse_amp, pulses,
                       numeric_tracks(rng, duration, beats, tg, base, mp, rr, art))


def numeric_tracks(rng, duration, beats, tg, base, mp, rr, art: Arteries) -> tuple:
    """``(tn, {key: values})`` every 2 s: HR from the beats, the arterial pressures, RR, SpO2 and BIS."""
    tn = np.arange(0, duration, 2.0)
    m = np.interp(tn, tg, mp) + rng.normal(0, 1.0, len(tn))   # the monitor's beat-averaged reading
    pp = art.pp0 * m / base
    values = {
        "hr": np.round(np.interp(tn, beats[1:], 60.0 / np.diff(beats))),
        "map": np.round(m),
        "sbp": np.round(m + 2.0 / 3.0 * pp),
        "dbp": np.round(m - 1.0 / 3.0 * pp),
        "rr": np.round(np.interp(tn, tg, rr)),
        "spo2": np.clip(np.round(98 + rng.normal(0, 0.8, len(tn))), 90, 100),
        "bis": np.clip(np.round(rng.uniform(38, 55) + 4 * np.sin(2 * np.pi * tn / rng.uniform(300, 900))), 0, 100),
    }
    return tn, values
