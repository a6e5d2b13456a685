"""Hand-curated clinical vocabulary: diagnoses, procedures, lab words, sensitive categories.

Each table maps a lower-case term (words separated by one space, as the
tokeniser sees them) to its weight: 1.0 when the term alone says "this is
about someone's health", less when it is also common outside the clinic
("fever", "mental health", "rehab"). Terms listed in CASE_SENSITIVE only
count when written as shown ("AIDS" but not "hearing aids").
"""

from __future__ import annotations

from collections.abc import Mapping

SENSITIVE_CATEGORIES = ("substance-use", "hiv", "mental-health", "genetic", "reproductive")


def _table(spec: str) -> dict[str, float]:
    """Parse "term|weight" lines (weight defaults to 1.0); blank lines and # comments skipped."""
    out: dict[str, float] = {}
    for raw in spec.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        term, _, weight = line.partition("|")
        out[" ".join(term.split())] = float(weight) if weight else 1.0
    return out


DIAGNOSES = _table(
    """
    diabetes
    diabetic|0.8
    prediabetes
    type 1 diabetes
    type 2 diabetes
    hypertension
    hypertensive|0.8
    hyperlipidemia
    hypercholesterolemia
    high blood pressure|0.8
    high cholesterol|0.7
    asthma
    copd
    emphysema
    chronic obstructive pulmonary disease
    cancer|0.8
    carcinoma
    tumor|0.8
    tumour|0.8
    malignancy
    malignant|0.8
    metastatic
    metastasis
    metastases
    leukemia
    lymphoma
    melanoma
    sarcoma
    myeloma
    mesothelioma
    glioblastoma
    pneumonia
    bronchitis
    influenza|0.6
    covid|0.6
    covid-19|0.6
    sepsis
    septic|0.6
    heart failure
    chf
    congestive heart failure
    coronary artery disease
    myocardial infarction
    heart attack
    stemi
    nstemi
    atrial fibrillation
    afib
    a-fib
    arrhythmia
    stroke|0.6
    transient ischemic attack
    aneurysm
    deep vein thrombosis
    dvt
    pulmonary embolism
    thrombosis
    embolism
    dementia
    alzheimer
    alzheimers
    alzheimer's
    parkinson's
    parkinsons
    parkinson's disease
    epilepsy
    seizure|0.8
    seizures|0.8
    migraine|0.6
    migraines|0.6
    multiple sclerosis
    cystic fibrosis
    sickle cell
    muscular dystrophy
    cerebral palsy
    autism|0.8
    down syndrome
    hepatitis
    cirrhosis
    fatty liver
    kidney disease
    renal failure
    kidney failure
    ckd
    esrd
    end-stage renal disease
    kidney stones|0.8
    glaucoma
    cataract|0.8
    cataracts|0.8
    macular degeneration
    lupus
    rheumatoid arthritis
    osteoarthritis
    osteoporosis
    fibromyalgia
    gout|0.8
    psoriasis
    eczema|0.8
    obesity|0.6
    morbid obesity
    sleep apnea
    apnea|0.8
    insomnia|0.6
    hypothyroidism
    hyperthyroidism
    anemia
    anaemia
    hemophilia
    tuberculosis
    lyme disease
    mrsa
    urinary tract infection
    uti
    infection|0.5
    fracture|0.8
    fractured|0.8
    concussion|0.8
    traumatic brain injury
    laceration|0.8
    herniated disc
    scoliosis
    back pain|0.5
    chest pain|0.8
    shortness of breath|0.8
    dyspnea
    syncope
    vertigo|0.6
    nausea|0.5
    vomiting|0.5
    diarrhea|0.5
    fever|0.5
    abdominal pain|0.8
    blood clot|0.8
    hypoglycemia
    hyperglycemia
    ulcer|0.7
    gerd
    acid reflux|0.6
    reflux|0.6
    gastroesophageal reflux
    ibs|0.6
    crohn's
    crohns
    crohn's disease
    ulcerative colitis
    diverticulitis
    pancreatitis
    appendicitis
    gallstones
    hernia|0.8
    celiac disease
    anaphylaxis
    allergic reaction|0.7
    allergic to|0.6
    polycystic ovary syndrome
    pcos
    endometriosis
    erectile dysfunction
    incontinence|0.8
    benign prostatic hyperplasia
    dysphagia
    aphasia
    paralysis
    paraplegia
    quadriplegia
    amputation
    spinal cord injury
    coma|0.7
    terminal illness
    hospice|0.8
    palliative care
    diagnosed with|0.8
    suffers from|0.5
    chronic kidney disease
    coronary artery bypass
    neuropathy
    retinopathy
    nephropathy
    cardiomyopathy
    flu|0.5
    strep|0.6
    strep throat
    shingles|0.8
    chickenpox
    measles|0.8
    mononucleosis
    ear infection|0.8
    rash|0.4
    cough|0.4
    headache|0.4
    headaches|0.4
    dizziness|0.5
    fatigue|0.3
    kidney stone|0.8
    broken arm|0.7
    broken leg|0.7
    broken wrist|0.7
    broken hip|0.8
    torn acl
    rotator cuff|0.7
    carpal tunnel|0.7
    sciatica
    high blood sugar|0.8
    low blood sugar|0.8
    heart disease
    heart condition|0.8
    heart murmur|0.8
    blood clots|0.8
    chronic pain|0.7
    pain management|0.5
    wound|0.4
    injury|0.3
    allergy|0.4
    allergies|0.4
    peanut allergy|0.7
    penicillin allergy
    liver disease
    hepatitis c
    hep c
    hemorrhage
    edema|0.7
    hypotension
    tachycardia
    bradycardia
    angina
    polyp|0.6
    polyps|0.6
    cyst|0.6
    lesion|0.6
    nodule|0.6
    malnutrition
    dehydration|0.5
    obstructive sleep apnea
    vitiligo
    basal cell carcinoma
    squamous cell carcinoma
    oncology|0.4
    oncologist|0.5
    cardiologist|0.4
    neurologist|0.4
    endocrinologist|0.4
    nephrologist|0.4
    rheumatologist|0.4
    urologist|0.4
    gastroenterologist|0.4
    pulmonologist|0.4
    symptomatic|0.5
    asymptomatic|0.5
    """
)

PROCEDURES = _table(
    """
    mri|0.8
    mri scan
    ct scan
    cat scan
    pet scan
    x-ray|0.7
    xray|0.7
    chest x-ray
    chest xray
    ultrasound|0.6
    mammogram
    mammography
    biopsy
    chemotherapy
    chemo
    radiotherapy
    radiation therapy
    radiation treatment
    dialysis
    hemodialysis
    transplant|0.6
    catheterization
    cardiac cath
    ekg|0.8
    ecg|0.8
    electrocardiogram
    echocardiogram
    stress test|0.6
    pap smear
    pap test
    physical therapy|0.6
    occupational therapy|0.6
    intubation
    lumbar puncture
    spinal tap
    angiogram
    bone marrow
    blood transfusion
    transfusion|0.8
    c-section
    cesarean
    cataract surgery
    knee replacement
    hip replacement
    joint replacement
    bypass surgery
    cabg
    stent|0.6
    pacemaker|0.8
    sutures|0.6
    wound care|0.7
    infusion|0.6
    iv antibiotics
    surgery|0.5
    surgical|0.4
    vaccination|0.4
    immunization|0.4
    flu shot|0.4
    post-op|0.7
    postoperative|0.8
    preoperative|0.8
    knee surgery
    back surgery
    heart surgery
    open heart surgery
    cardiac surgery
    stitches|0.5
    blood test|0.5
    blood draw|0.5
    urine test|0.5
    urine sample|0.5
    lab test|0.4
    metabolic panel|0.6
    comprehensive metabolic panel|0.8
    lipid panel|0.7
    cbc|0.5
    covid test|0.5
    strep test|0.7
    vaccine|0.3
    pet/ct
    physical exam|0.4
    """
)

LAB_WORDS = _table(
    """
    lab results|0.6
    test results|0.4
    blood work|0.5
    bloodwork|0.5
    lab work|0.5
    biopsy results
    pathology report|0.8
    radiology report|0.8
    imaging results|0.6
    a1c|0.6
    hba1c|0.6
    hemoglobin a1c|0.6
    blood sugar|0.6
    blood glucose|0.6
    cholesterol|0.4
    blood pressure|0.4
    creatinine|0.5
    egfr|0.5
    troponin|0.6
    urinalysis|0.6
    culture results|0.6
    """
)

# Words that say "clinical communication" without naming a condition.
CLINICAL_CONTEXT = _table(
    """
    patient|0.5
    patients|0.3
    diagnosis|0.3
    diagnoses|0.3
    diagnosed|0.4
    prognosis|0.4
    symptoms|0.3
    prescription|0.3
    prescribed|0.4
    medication|0.3
    medications|0.3
    treatment|0.2
    admitted|0.3
    discharged|0.3
    hospitalized|0.5
    hospitalization|0.5
    inpatient|0.4
    outpatient|0.3
    positive for|0.4
    negative for|0.3
    history of|0.3
    hx|0.4
    s/p|0.4
    c/o|0.3
    chief complaint|0.6
    assessment and plan|0.6
    progress note|0.6
    discharge summary|0.7
    plan of care|0.5
    medical history|0.5
    clinical notes|0.5
    vital signs|0.4
    vitals|0.4
    emergency room|0.4
    er|0.4
    er visit|0.5
    icu|0.5
    office visit|0.3
    follow-up visit|0.3
    referral|0.2
    prior authorization|0.4
    pre-authorization|0.4
    preauthorization|0.4
    """
)

SENSITIVE: Mapping[str, dict[str, float]] = {
    "substance-use": _table(
        """
        substance use disorder
        substance abuse
        drug abuse
        alcohol abuse
        alcohol use disorder
        opioid use disorder
        opioid dependence
        alcohol dependence
        chemical dependency
        addiction
        addicted|0.8
        alcoholism
        alcoholic|0.6
        detox|0.8
        detoxification
        withdrawal symptoms|0.8
        overdose|0.8
        overdosed
        methadone
        methadone clinic
        buprenorphine
        suboxone
        subutex
        sublocade
        naltrexone
        vivitrol
        naloxone|0.6
        narcan|0.6
        medication-assisted treatment
        medication assisted treatment
        sud
        oud
        rehab|0.5
        sober living
        urine drug screen|0.7
        drug screen|0.5
        tox screen|0.8
        toxicology screen|0.8
        cocaine|0.8
        heroin|0.8
        fentanyl|0.7
        methamphetamine|0.8
        opiates|0.7
        opioid|0.6
        opioids|0.6
        narcotics anonymous
        alcoholics anonymous
        """
    ),
    "hiv": _table(
        """
        hiv
        hiv-positive
        hiv positive
        hiv/aids
        aids
        acquired immunodeficiency syndrome
        viral load|0.8
        cd4|0.8
        cd4 count
        antiretroviral
        antiretroviral therapy
        prep|0.8
        pre-exposure prophylaxis
        truvada
        descovy
        biktarvy
        genvoya
        stribild
        triumeq
        dovato
        juluca
        odefsey
        complera
        atripla
        symtuza
        cabenuva
        apretude
        isentress
        tivicay
        prezista
        dolutegravir
        bictegravir
        emtricitabine
        tenofovir|0.8
        efavirenz
        raltegravir
        darunavir
        abacavir
        zidovudine
        lamivudine|0.8
        nevirapine
        rilpivirine
        cabotegravir
        lenacapavir
        """
    ),
    "mental-health": _table(
        """
        depression|0.8
        major depressive disorder
        major depression
        depressive disorder
        mdd|0.8
        bipolar
        bipolar disorder
        schizophrenia
        schizoaffective
        psychosis
        psychotic
        ptsd
        post-traumatic stress
        posttraumatic stress
        anxiety disorder
        generalized anxiety disorder
        panic disorder
        panic attacks|0.8
        anxiety|0.4
        ocd|0.6
        obsessive-compulsive
        adhd|0.8
        eating disorder
        anorexia|0.8
        bulimia
        borderline personality
        personality disorder
        suicidal
        suicidal ideation
        suicide attempt
        suicide|0.7
        self-harm
        self harm
        psychiatric
        psychiatrist|0.6
        psychiatry|0.6
        psychotherapy
        mental illness
        mental health|0.5
        behavioral health|0.5
        psych eval
        psychiatric evaluation
        antidepressant
        antidepressants
        antipsychotic
        antipsychotics
        mood disorder
        sertraline
        fluoxetine
        zoloft
        prozac
        lexapro
        escitalopram
        citalopram
        celexa
        paroxetine
        paxil
        venlafaxine
        effexor
        duloxetine
        cymbalta
        bupropion|0.7
        wellbutrin|0.7
        mirtazapine
        trazodone|0.6
        quetiapine
        seroquel
        aripiprazole
        abilify
        risperidone
        risperdal
        olanzapine
        zyprexa
        clozapine
        clozaril
        haloperidol
        haldol
        lurasidone
        latuda
        ziprasidone
        geodon
        lithium carbonate
        buspirone
        buspar
        vraylar
        rexulti
        caplyta
        spravato
        esketamine
        electroconvulsive therapy
        """
    ),
    "genetic": _table(
        """
        genetic testing
        genetic test
        genetic tests
        genetic counseling
        genetic counselor
        genetic screening
        genetic results
        brca
        brca1
        brca2
        lynch syndrome
        huntington's disease
        huntington disease
        carrier screening
        carrier status
        whole exome
        exome sequencing
        genome sequencing
        germline
        pathogenic variant
        genetic mutation
        gene mutation
        hereditary cancer
        karyotype
        chromosomal abnormality
        trisomy
        genetic predisposition
        apoe4
        pharmacogenomic
        pharmacogenomics
        nipt
        noninvasive prenatal testing
        """
    ),
    "reproductive": _table(
        """
        abortion
        pregnancy termination
        termination of pregnancy
        elective termination
        miscarriage
        spontaneous abortion
        ectopic pregnancy
        ivf
        in vitro fertilization
        infertility
        fertility treatment
        egg retrieval
        embryo transfer
        iui
        contraception
        contraceptive
        birth control|0.8
        iud
        morning-after pill
        emergency contraception
        mifepristone
        misoprostol
        pregnancy test
        pregnant|0.8
        pregnancy|0.7
        prenatal|0.7
        prenatal care
        obstetric|0.6
        gestational
        weeks pregnant
        weeks gestation
        std
        stds
        sti
        stis
        sexually transmitted
        syphilis
        gonorrhea
        chlamydia
        herpes
        hpv
        trichomoniasis
        genital warts
        vasectomy
        tubal ligation
        gender-affirming
        hormone therapy|0.6
        sexual health|0.5
        std testing
        sti testing
        """
    ),
}

# Terms that are ordinary words in lower case: they count only as written here.
CASE_SENSITIVE = {
    "aids": "AIDS",
    "prep": "PrEP",
    "sud": "SUD",
    "oud": "OUD",
    "mdd": "MDD",
    "ocd": "OCD",
    "std": "STD",
    "sti": "STI",
    "ibs": "IBS",
    "icu": "ICU",
    "er": "ER",
    "cbc": "CBC",
    "hx": "Hx",
    "uti": "UTI",
    "iui": "IUI",
    "ivf": "IVF",
    "iud": "IUD",
    "cd4": "CD4",
    "dvt": "DVT",
    "chf": "CHF",
    "ckd": "CKD",
    "mri": "MRI",
    "ekg": "EKG",
    "ecg": "ECG",
    "copd": "COPD",
    "gerd": "GERD",
    "pcos": "PCOS",
    "nipt": "NIPT",
}
# A term preceded by one of these words means something else ("tropical depression").
NOT_AFTER = {
    "depression": frozenset({"tropical", "economic", "great", "the great"}),
    "stroke": frozenset({"a", "master", "lucky", "brush", "key", "back", "single"}),
    "transplant": frozenset({"hair"}),
    "infection": frozenset({"malware", "virus", "computer", "ransomware"}),
    "detox": frozenset({"digital", "juice", "email", "social"}),
    "rehab": frozenset({"building", "property", "house", "home", "kitchen"}),
    "surgery": frozenset({"plastic"}),
    "fever": frozenset({"spring", "cabin", "football", "march"}),
}
