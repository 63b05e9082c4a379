# Drop one app into apps.d, validated before it lands, and apply it.
# `appctl check` validates offline: a file that does not validate is never
# written, and the running version is left untouched.
file { '/etc/appvisor/apps.d/shop.toml':
  ensure       => file,
  owner        => 'root',
  group        => 'root',
  mode         => '0644',
  content      => epp('profile/appvisor/shop.toml.epp'),
  validate_cmd => '/usr/bin/appctl check --as shop %',  # % is a temporary copy
  notify       => Exec['appctl update'],
}

# Restarts only the apps whose files changed.
exec { 'appctl update':
  command     => '/usr/bin/appctl update',
  refreshonly => true,
}
