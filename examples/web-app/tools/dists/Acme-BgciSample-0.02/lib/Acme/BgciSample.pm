package Acme::BgciSample;
use strict;
use warnings;

our $VERSION = '0.02';

use Acme::BgciSample::V2;

# A tiny non-CPAN distribution shipped in vendor/cache of the bgci sample
# app, so that its dependency layer installs a real module offline.
sub version_tag { 'Acme-BgciSample-' . $VERSION . ' (' . Acme::BgciSample::V2->flavour . ')' }

1;
__END__

=head1 NAME

Acme::BgciSample - tiny dependency of the bgci sample web app

=head1 SYNOPSIS

  use Acme::BgciSample;
  print Acme::BgciSample->version_tag, "\n";

=cut
