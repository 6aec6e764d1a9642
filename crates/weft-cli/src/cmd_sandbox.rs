//! `weft sandbox`: the Kantata, Xero, QuickBooks Online and HubSpot simulators on loopback with
//! seeded demo data, serving until interrupted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use weft_core::{DEFAULT_CALLBACK_PORT, callback_url};
use weft_harness::clock::SimClock;
use weft_harness::hubspot::{HubSpotConfig, HubSpotSim};
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::quickbooks::{QuickBooksConfig, QuickBooksSim};
use weft_harness::xero::{XeroConfig, XeroSim};

use crate::Io;

/// Options of `weft sandbox`.
#[derive(Debug, Args)]
pub(crate) struct SandboxArgs {
    /// Seed of the generated data: the same seed gives the same accounts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Invoices per account (Kantata), per organisation (Xero) and per company (QuickBooks, at
    /// most 20,000 there), and contacts per HubSpot account (at most 20,000); other records scale
    /// with it.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    size: u64,
    /// Simulated network latency added to every API call, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    latency_ms: u64,
    /// First of ten consecutive ports (Kantata app, Kantata API, Xero login, Xero identity,
    /// Xero API, QuickBooks app center, QuickBooks OAuth, QuickBooks API, HubSpot app, HubSpot
    /// API); 0 picks free ports.
    #[arg(long, default_value_t = 8700)]
    port_base: u16,
    /// Organisations in the Xero sandbox.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=20))]
    organisations: u64,
    /// Companies in the QuickBooks Online sandbox (each consent connects one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    companies: u64,
    /// Print one JSON object (URLs and demo credentials) as the first line of stdout.
    #[arg(long)]
    json: bool,
    /// The callback URL the simulated apps accept (the default port's, unless `weft demo` picks
    /// another).
    #[arg(skip)]
    redirect: Option<String>,
    /// Another callback URL they accept (the console's, for `weft demo --serve`).
    #[arg(skip)]
    also_redirect: Option<String>,
}

impl SandboxArgs {
    /// The sandbox `weft demo` runs on: free ports, one organisation, this callback URL.
    pub(crate) fn for_demo(
        seed: u64,
        size: u64,
        redirect: String,
        also_redirect: Option<String>,
    ) -> Self {
        Self {
            seed,
            size,
            latency_ms: 0,
            port_base: 0,
            organisations: 1,
            companies: 1,
            json: false,
            redirect: Some(redirect),
            also_redirect,
        }
    }
}

#[derive(Serialize)]
struct KantataInfo {
    app_url: String,
    api_url: String,
    client_id: String,
    client_secret: String,
    personal_token: String,
}

#[derive(Serialize)]
struct XeroInfo {
    login_url: String,
    identity_url: String,
    api_url: String,
    client_id: String,
    client_secret: String,
    organisations: Vec<Organisation>,
}

#[derive(Serialize)]
struct Organisation {
    tenant_id: String,
    name: String,
}

#[derive(Serialize)]
struct QuickBooksInfo {
    appcenter_url: String,
    oauth_url: String,
    developer_url: String,
    api_url: String,
    client_id: String,
    client_secret: String,
    companies: Vec<Company>,
}

#[derive(Serialize)]
struct Company {
    realm_id: String,
    name: String,
}

#[derive(Serialize)]
struct HubSpotInfo {
    app_url: String,
    api_url: String,
    client_id: String,
    client_secret: String,
    portals: Vec<Portal>,
}

#[derive(Serialize)]
struct Portal {
    portal_id: u64,
    private_app_token: String,
}

#[derive(Serialize)]
struct SandboxInfo {
    seed: u64,
    size: u64,
    callback_url: String,
    kantata: KantataInfo,
    xero: XeroInfo,
    quickbooks: QuickBooksInfo,
    hubspot: HubSpotInfo,
}

/// Starts the simulators; they serve until the process ends.
pub(crate) struct Sandbox {
    /// The Kantata simulator.
    pub(crate) kantata: KantataSim,
    /// The Xero simulator.
    pub(crate) xero: XeroSim,
    /// The QuickBooks Online simulator.
    pub(crate) quickbooks: QuickBooksSim,
    /// The HubSpot simulator.
    pub(crate) hubspot: HubSpotSim,
}

fn port(base: u16, offset: u16) -> Result<u16> {
    if base == 0 {
        return Ok(0);
    }
    base.checked_add(offset)
        .context("--port-base is too high: ten consecutive ports are needed")
}

pub(crate) fn start(args: &SandboxArgs) -> Result<Sandbox> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let clock = SimClock::scaled(now_ms, 1);
    let latency = (args.latency_ms > 0).then(|| Duration::from_millis(args.latency_ms));
    let size = usize::try_from(args.size).unwrap_or(usize::MAX);
    let mut redirect = vec![
        args.redirect
            .clone()
            .unwrap_or_else(|| callback_url(DEFAULT_CALLBACK_PORT)),
    ];
    redirect.extend(args.also_redirect.clone());
    let busy = |what: &str, first: u16| {
        format!(
            "cannot start the {what} simulator on 127.0.0.1 (ports from {first}); is another sandbox running? try --port-base 0"
        )
    };
    let kantata = KantataSim::start(KantataConfig {
        seed: args.seed,
        size,
        clock: clock.clone(),
        app_port: port(args.port_base, 0)?,
        api_port: port(args.port_base, 1)?,
        redirect_uris: redirect.clone(),
        latency,
        ..KantataConfig::default()
    })
    .with_context(|| busy("Kantata", args.port_base))?;
    let xero = XeroSim::start(XeroConfig {
        seed: args.seed,
        size,
        organisations: usize::try_from(args.organisations).unwrap_or(2),
        clock: clock.clone(),
        login_port: port(args.port_base, 2)?,
        identity_port: port(args.port_base, 3)?,
        api_port: port(args.port_base, 4)?,
        redirect_uris: redirect.clone(),
        latency,
        ..XeroConfig::default()
    })
    .with_context(|| busy("Xero", args.port_base.saturating_add(2)))?;
    let quickbooks = QuickBooksSim::start(QuickBooksConfig {
        seed: args.seed,
        size: size.min(weft_harness::quickbooks::MAX_SEEDED),
        companies: usize::try_from(args.companies).unwrap_or(1),
        clock: clock.clone(),
        appcenter_port: port(args.port_base, 5)?,
        oauth_port: port(args.port_base, 6)?,
        api_port: port(args.port_base, 7)?,
        redirect_uris: redirect.clone(),
        latency,
        ..QuickBooksConfig::default()
    })
    .with_context(|| busy("QuickBooks", args.port_base.saturating_add(5)))?;
    let hubspot = HubSpotSim::start(HubSpotConfig {
        seed: args.seed,
        size: size.min(weft_harness::hubspot::MAX_SEEDED),
        clock,
        app_port: port(args.port_base, 8)?,
        api_port: port(args.port_base, 9)?,
        redirect_uris: redirect,
        latency,
        ..HubSpotConfig::default()
    })
    .with_context(|| busy("HubSpot", args.port_base.saturating_add(8)))?;
    Ok(Sandbox {
        kantata,
        xero,
        quickbooks,
        hubspot,
    })
}

pub(crate) fn run(args: SandboxArgs, io: &mut Io<'_>) -> Result<u8> {
    let sandbox = start(&args)?;
    let (k, x, q, h) = (
        &sandbox.kantata,
        &sandbox.xero,
        &sandbox.quickbooks,
        &sandbox.hubspot,
    );
    let info = SandboxInfo {
        seed: args.seed,
        size: args.size,
        callback_url: callback_url(DEFAULT_CALLBACK_PORT),
        kantata: KantataInfo {
            app_url: k.app_url(),
            api_url: k.api_url(),
            client_id: k.client_id().to_owned(),
            client_secret: k.client_secret().to_owned(),
            personal_token: k.personal_token().to_owned(),
        },
        xero: XeroInfo {
            login_url: x.login_url(),
            identity_url: x.identity_url(),
            api_url: x.api_url(),
            client_id: x.client_id().to_owned(),
            client_secret: x.client_secret().to_owned(),
            organisations: x
                .tenants()
                .into_iter()
                .map(|(tenant_id, name)| Organisation { tenant_id, name })
                .collect(),
        },
        quickbooks: QuickBooksInfo {
            appcenter_url: q.appcenter_url(),
            oauth_url: q.oauth_url(),
            developer_url: q.developer_url(),
            api_url: q.api_url(),
            client_id: q.client_id().to_owned(),
            client_secret: q.client_secret().to_owned(),
            companies: q
                .companies()
                .into_iter()
                .map(|(realm_id, name)| Company { realm_id, name })
                .collect(),
        },
        hubspot: HubSpotInfo {
            app_url: h.app_url(),
            api_url: h.api_url(),
            client_id: h.client_id().to_owned(),
            client_secret: h.client_secret().to_owned(),
            portals: h
                .portals()
                .into_iter()
                .map(|portal_id| Portal {
                    portal_id,
                    private_app_token: h
                        .private_app_token(portal_id)
                        .unwrap_or_default()
                        .to_owned(),
                })
                .collect(),
        },
    };
    if args.json {
        writeln!(io.out, "{}", serde_json::to_string(&info)?)?;
    } else {
        writeln!(
            io.out,
            "Weft sandbox: Kantata, Xero, QuickBooks Online and HubSpot simulators on 127.0.0.1 (seed {}, {} invoices per account)\n",
            info.seed, info.size
        )?;
        writeln!(io.out, "Kantata OX")?;
        writeln!(io.out, "  app (OAuth)     {}", info.kantata.app_url)?;
        writeln!(io.out, "  api             {}", info.kantata.api_url)?;
        writeln!(io.out, "  client ID       {}", info.kantata.client_id)?;
        writeln!(io.out, "  client secret   {}", info.kantata.client_secret)?;
        writeln!(io.out, "  personal token  {}", info.kantata.personal_token)?;
        writeln!(io.out, "Xero")?;
        writeln!(io.out, "  login           {}", info.xero.login_url)?;
        writeln!(io.out, "  identity        {}", info.xero.identity_url)?;
        writeln!(io.out, "  api             {}", info.xero.api_url)?;
        writeln!(io.out, "  client ID       {}", info.xero.client_id)?;
        writeln!(io.out, "  client secret   {}", info.xero.client_secret)?;
        for org in &info.xero.organisations {
            writeln!(io.out, "  organisation    {} ({})", org.name, org.tenant_id)?;
        }
        let qb = &info.quickbooks;
        writeln!(io.out, "QuickBooks Online")?;
        writeln!(io.out, "  app center      {}", qb.appcenter_url)?;
        writeln!(io.out, "  oauth           {}", qb.oauth_url)?;
        writeln!(io.out, "  developer       {}", qb.developer_url)?;
        writeln!(io.out, "  api             {}", qb.api_url)?;
        writeln!(io.out, "  client ID       {}", qb.client_id)?;
        writeln!(io.out, "  client secret   {}", qb.client_secret)?;
        for company in &qb.companies {
            writeln!(
                io.out,
                "  company         {} (realm {})",
                company.name, company.realm_id
            )?;
        }
        let hs = &info.hubspot;
        writeln!(io.out, "HubSpot")?;
        writeln!(io.out, "  app (install)   {}", hs.app_url)?;
        writeln!(io.out, "  api             {}", hs.api_url)?;
        writeln!(io.out, "  client ID       {}", hs.client_id)?;
        writeln!(io.out, "  client secret   {}", hs.client_secret)?;
        for portal in &hs.portals {
            writeln!(
                io.out,
                "  account         {} (private app token {})",
                portal.portal_id, portal.private_app_token
            )?;
        }
        writeln!(
            io.out,
            "\nThe demo apps accept the callback URL {}.",
            info.callback_url
        )?;
        writeln!(
            io.out,
            "\nTo point a workspace at the sandbox (the secrets are read from standard input; the Kantata and Xero names are those `weft init --template kantata-xero` and its flow use):"
        )?;
        writeln!(
            io.out,
            "  echo {} | weft client add kantata-app --connector kantata --client-id {} --secret-stdin",
            info.kantata.client_secret, info.kantata.client_id
        )?;
        writeln!(
            io.out,
            "  weft connection create kantata --connector kantata --client kantata-app --host app={} --host api={}",
            info.kantata.app_url, info.kantata.api_url
        )?;
        writeln!(
            io.out,
            "  echo {} | weft client add xero-app --connector xero --client-id {} --secret-stdin",
            info.xero.client_secret, info.xero.client_id
        )?;
        writeln!(
            io.out,
            "  weft connection create xero --connector xero --client xero-app --host login={} --host identity={} --host api={}",
            info.xero.login_url, info.xero.identity_url, info.xero.api_url
        )?;
        writeln!(
            io.out,
            "  echo {} | weft client add quickbooks-app --connector quickbooks --client-id {} --secret-stdin",
            qb.client_secret, qb.client_id
        )?;
        writeln!(
            io.out,
            "  weft connection create quickbooks --connector quickbooks --client quickbooks-app --host appcenter={} --host oauth={} --host developer={} --host api={}",
            qb.appcenter_url, qb.oauth_url, qb.developer_url, qb.api_url
        )?;
        writeln!(
            io.out,
            "  echo {} | weft client add hubspot-app --connector hubspot --client-id {} --secret-stdin",
            hs.client_secret, hs.client_id
        )?;
        writeln!(
            io.out,
            "  weft connection create hubspot --connector hubspot --client hubspot-app --host app={} --host api={}",
            hs.app_url, hs.api_url
        )?;
        writeln!(io.out, "  weft connection authorize kantata --no-browser")?;
        writeln!(io.out, "  weft connection authorize xero --no-browser")?;
        writeln!(
            io.out,
            "  weft connection authorize quickbooks --no-browser"
        )?;
        writeln!(io.out, "  weft connection authorize hubspot --no-browser")?;
        writeln!(
            io.out,
            "These are sandbox credentials for the simulators only; nothing here reaches Kantata, Xero, Intuit or HubSpot."
        )?;
        writeln!(io.out, "Serving until interrupted (Ctrl-C).")?;
    }
    io.out.flush()?;
    loop {
        std::thread::park();
    }
}
