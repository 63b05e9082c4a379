//! `appctl security [APP...] [--json]`: what confines each app, and its
//! exposure score with the weighted checks behind it.

use std::fmt::Write as _;

use appvisor_protocol::client::Client;
use appvisor_protocol::{routes, AppList, AppSecurity};

use crate::commands::{print, CommandError};
use crate::escape;
use crate::exit::Exit;

/// Prints the security report of `apps` (default: every app the caller
/// may see).
pub async fn security(client: &Client, apps: &[String], json: bool) -> Result<Exit, CommandError> {
    let names: Vec<String> = if apps.is_empty() {
        let list: AppList = client.get(routes::APPS).await?;
        list.apps.into_iter().map(|a| a.name).collect()
    } else {
        apps.to_vec()
    };
    let mut reports = Vec::with_capacity(names.len());
    for name in &names {
        reports.push(client.get::<AppSecurity>(&routes::security(name)).await?);
    }
    if json {
        let text = serde_json::to_string_pretty(&reports).expect("reports serialize");
        print(&format!("{}\n", escape::json(&text)))?;
    } else {
        let text: Vec<String> = reports.iter().map(render).collect();
        print(&text.join("\n"))?;
    }
    Ok(Exit::Done)
}

fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(|item| escape::field(&item.to_string()).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or("none".to_owned(), |v| v.to_string())
}

/// One app's report as text.
pub fn render(s: &AppSecurity) -> String {
    let f = |text: &str| escape::field(text).into_owned();
    let mut t = String::new();
    let _ = writeln!(t, "{}: exposure {:.1}/10", f(&s.name), s.exposure);
    let _ = writeln!(
        t,
        "  user        {} (uid {}, gid {}, groups {})",
        f(&s.user),
        s.uid,
        s.gid,
        list(&s.groups)
    );
    let l = &s.landlock;
    let source = if l.reported {
        "last spawn"
    } else {
        "not spawned yet"
    };
    let _ = writeln!(
        t,
        "  landlock    {} ({}), ABI {} of kernel's {}, {source}",
        f(&l.status),
        f(&l.mode),
        l.abi,
        l.kernel_abi
    );
    if !l.not_enforced.is_empty() {
        let _ = writeln!(t, "  not enforced {}", list(&l.not_enforced));
    }
    let _ = writeln!(t, "  bind        {}", list(&s.bind_ports));
    let connect = match &s.connect_ports {
        Some(ports) => list(ports),
        None => "any port".to_owned(),
    };
    let _ = writeln!(t, "  connect     {connect}");
    let _ = writeln!(
        t,
        "  namespaces  {} (network {}, private /tmp {})",
        list(&s.namespaces),
        f(&s.network),
        if s.private_tmp { "yes" } else { "no" }
    );
    let memory = s.limits.memory.map(|b| format!("{}MiB", b >> 20));
    let cpu = s.limits.cpu.map(|p| format!("{p}%"));
    // "tasks 4915 (default)" where appvisord's default applies.
    let limit = |key: &str, value: String| {
        if s.limits.defaults.iter().any(|d| d == key) {
            format!("{key} {value} (default)")
        } else {
            format!("{key} {value}")
        }
    };
    let _ = writeln!(
        t,
        "  limits      {}, {}, {}, {}, core {}",
        limit("memory", opt(memory)),
        limit("tasks", opt(s.limits.tasks)),
        limit("cpu", opt(cpu)),
        limit("open_files", opt(s.limits.open_files)),
        s.limits.core
    );
    let _ = writeln!(
        t,
        "  privileges  no_new_privs {}, capabilities {}",
        if s.no_new_privs { "yes" } else { "no" },
        list(&s.capabilities)
    );
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let seccomp = match &s.seccomp {
        Some(filter) => format!(
            "sockets {}, {} syscalls refused",
            list(&filter.socket_families),
            filter.refused.len()
        ),
        None => "none".to_owned(),
    };
    let _ = writeln!(
        t,
        "  kernel      seccomp {seccomp}; own /proc {}, own keyring {}",
        yes_no(s.private_proc),
        yes_no(s.session_keyring)
    );
    if let Some(refusal) = &s.refusal {
        let _ = writeln!(t, "  refused     {}", f(refusal));
    }
    let _ = writeln!(t, "  paths");
    for p in s.paths.iter().filter(|p| p.origin != "system") {
        let _ = write!(
            t,
            "    {:<13} {:<11} {}",
            f(&p.access),
            f(&p.origin),
            f(&p.path)
        );
        match &p.resolved {
            Some(resolved) if *resolved != p.path => {
                let _ = writeln!(t, " -> {}", f(resolved));
            }
            _ => t.push('\n'),
        }
    }
    let system = s.paths.iter().filter(|p| p.origin == "system").count();
    let _ = writeln!(
        t,
        "    ({system} system paths, {} hidden: --json lists them)",
        s.hidden.len()
    );
    let _ = writeln!(t, "  checks");
    for c in &s.checks {
        let mark = if c.passed { "pass" } else { "FAIL" };
        let _ = writeln!(t, "    {mark} {:>2}  {}", c.weight, f(&c.description));
        if let Some(detail) = &c.detail {
            let _ = writeln!(t, "             {}", f(detail));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use appvisor_protocol::{
        LandlockSecurity, SecurityCheck, SecurityLimits, SecurityPath, SecuritySeccomp,
    };

    use super::*;

    #[test]
    fn renders_every_section() {
        let report = AppSecurity {
            name: "shop".into(),
            user: "shop".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![1001],
            landlock: LandlockSecurity {
                mode: "best-effort".into(),
                kernel_abi: 7,
                abi: 3,
                status: "partial".into(),
                not_enforced: vec!["bind_ports (needs ABI 4)".into()],
                reported: true,
            },
            paths: vec![
                SecurityPath {
                    path: "/usr".into(),
                    access: "read-execute".into(),
                    origin: "system".into(),
                    resolved: None,
                },
                SecurityPath {
                    path: "/srv/shop/current".into(),
                    access: "read".into(),
                    origin: "directory".into(),
                    resolved: Some("/srv/shop/releases/42".into()),
                },
            ],
            bind_ports: vec![8001],
            connect_ports: None,
            namespaces: vec!["mount".into(), "ipc".into(), "uts".into()],
            private_tmp: true,
            network: "host".into(),
            limits: SecurityLimits {
                memory: Some(512 << 20),
                tasks: Some(4915),
                cpu: Some(150),
                open_files: Some(1024),
                core: 0,
                defaults: vec!["tasks".into(), "open_files".into()],
            },
            no_new_privs: true,
            capabilities: Vec::new(),
            hidden: vec!["/etc/shadow".into()],
            private_proc: true,
            session_keyring: true,
            seccomp: Some(SecuritySeccomp {
                socket_families: vec!["AF_UNIX".into(), "AF_INET".into()],
                refused: vec!["bpf".into(), "ptrace".into()],
            }),
            refusal: Some("directory /srv/shop/x resolves to /, outside /srv/shop".into()),
            checks: vec![
                SecurityCheck {
                    id: "landlock-enforced".into(),
                    description: "Landlock rules fully enforced".into(),
                    weight: 4,
                    passed: false,
                    detail: None,
                },
                SecurityCheck {
                    id: "paths-confined".into(),
                    description: "no granted path opens / whole".into(),
                    weight: 3,
                    passed: false,
                    detail: Some("the last spawn was refused".into()),
                },
                SecurityCheck {
                    id: "private-tmp".into(),
                    description: "private /tmp".into(),
                    weight: 1,
                    passed: true,
                    detail: None,
                },
            ],
            exposure: 8.0,
        };
        assert_eq!(
            render(&report),
            "shop: exposure 8.0/10
  user        shop (uid 1001, gid 1001, groups 1001)
  landlock    partial (best-effort), ABI 3 of kernel's 7, last spawn
  not enforced bind_ports (needs ABI 4)
  bind        8001
  connect     any port
  namespaces  mount, ipc, uts (network host, private /tmp yes)
  limits      memory 512MiB, tasks 4915 (default), cpu 150%, open_files 1024 (default), core 0
  privileges  no_new_privs yes, capabilities none
  kernel      seccomp sockets AF_UNIX, AF_INET, 2 syscalls refused; own /proc yes, own keyring yes
  refused     directory /srv/shop/x resolves to /, outside /srv/shop
  paths
    read          directory   /srv/shop/current -> /srv/shop/releases/42
    (1 system paths, 1 hidden: --json lists them)
  checks
    FAIL  4  Landlock rules fully enforced
    FAIL  3  no granted path opens / whole
             the last spawn was refused
    pass  1  private /tmp
"
        );
    }
}
