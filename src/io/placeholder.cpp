// placeholder so the core library has a source until io/ lands
namespace px { int io_placeholder = 0; }
