//! Debian's nginx in front of an app, the way uWSGI is run behind it:
//! `uwsgi_pass` to the app's held socket. One nginx process per test, with
//! its configuration, logs and temp files in the test's prefix; killed on
//! drop.
//!
//! It runs as root with `master_process off` (a single process that never
//! changes user), listens on 127.0.0.1 only, and is never left running.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bins;
use crate::net::http_get;
use crate::prefix::Prefix;
use crate::wait::poll_until;

/// A running nginx.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

/// nginx.conf for one server on 127.0.0.1:`port` that passes every request
/// to `upstream` (`127.0.0.1:PORT` or `unix:/path`) with the uwsgi
/// protocol. Everything nginx writes stays under `dir`.
pub fn uwsgi_pass_config(dir: &Path, port: u16, upstream: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\n\
         master_process off;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n    \
             access_log {d}/access.log;\n    \
             client_body_temp_path {d}/body;\n    \
             proxy_temp_path {d}/proxy;\n    \
             fastcgi_temp_path {d}/fastcgi;\n    \
             uwsgi_temp_path {d}/uwsgi;\n    \
             scgi_temp_path {d}/scgi;\n    \
             server {{\n        \
                 listen 127.0.0.1:{port};\n        \
                 location / {{\n            \
                     include /etc/nginx/uwsgi_params;\n            \
                     uwsgi_pass {upstream};\n            \
                     uwsgi_buffering off;\n        \
                 }}\n    \
             }}\n\
         }}\n"
    )
}

impl Nginx {
    /// Starts nginx on 127.0.0.1:`port`, in front of `upstream`, and waits
    /// (at most 15 s) until it answers.
    pub fn uwsgi_pass(prefix: &Prefix, port: u16, upstream: &str) -> Nginx {
        assert!(
            Path::new(bins::NGINX).is_file(),
            "{} not found: run .ci/run (it installs Debian's nginx)",
            bins::NGINX
        );
        let dir = prefix.path().join("nginx");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let conf = dir.join("nginx.conf");
        fs::write(&conf, uwsgi_pass_config(&dir, port, upstream))
            .unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let child = Command::new(bins::NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bins::NGINX));
        let mut nginx = Nginx { child, port, dir };
        let up = poll_until(Duration::from_secs(15), || {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited with {status}\n{}", nginx.error_log());
            }
            http_get(port, "/").is_ok()
        });
        assert!(
            up,
            "nginx did not answer on 127.0.0.1:{port} within 15s\n{}",
            nginx.error_log()
        );
        nginx
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        let path = self.dir.join("error.log");
        format!(
            "--- nginx error log ({}) ---\n{}--- end ---",
            path.display(),
            fs::read_to_string(&path).unwrap_or_default()
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
