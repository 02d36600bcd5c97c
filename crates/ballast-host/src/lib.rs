//! Loading and running ballast plugins, and the PluginHostActor.
